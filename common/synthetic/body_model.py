"""Kinematic body model of the 17-joint skeleton: bone lengths, joint-angle limits, action families.

Used by the synthetic dataset to draw poses a person could hold: bone lengths vary
per subject, joint angles are drawn per action family around that family's
typical posture and clamped to anatomical limits.

Body frame (metres): x points to the person's left, y up, z forward (the way the
person faces); the pelvis is the origin. Angles are in degrees.
"""
from dataclasses import dataclass

import numpy as np

from common.core.skeleton import NUM_JOINTS

# Angle name -> (lowest, highest) in degrees. Flexion moves a limb forward
# (knee: bends back), abduction moves it away from the midline, rotation is
# internal rotation about the limb's own axis.
ANGLE_LIMITS = {
    "root_pitch": (-15.0, 40.0), "root_roll": (-10.0, 10.0),
    "spine_flex": (-25.0, 95.0), "spine_lat": (-35.0, 35.0), "spine_twist": (-45.0, 45.0),
    "neck_flex": (-40.0, 60.0), "neck_yaw": (-70.0, 70.0),
    **{f"{side}_{name}": limits for side in ("l", "r") for name, limits in {
        "hip_flex": (-30.0, 130.0), "hip_abd": (-20.0, 50.0), "hip_rot": (-40.0, 40.0),
        "knee": (0.0, 150.0),
        "sh_flex": (-50.0, 180.0), "sh_abd": (-10.0, 170.0), "sh_rot": (-70.0, 80.0),
        "elbow": (0.0, 150.0),
    }.items()},
}
ANGLE_NAMES = tuple(ANGLE_LIMITS)

# Neutral standing posture and the spread of small involuntary variation around it.
_NEUTRAL = {name: (0.0, 3.0) for name in ANGLE_NAMES}
_NEUTRAL.update({f"{s}_{n}": v for s in ("l", "r") for n, v in {
    "sh_flex": (5.0, 8.0), "sh_abd": (10.0, 5.0), "sh_rot": (10.0, 10.0), "elbow": (15.0, 8.0),
    "hip_abd": (4.0, 3.0), "knee": (5.0, 4.0), "hip_flex": (0.0, 4.0),
}.items()})

# Human3.6M action number (2-16) -> the action family drawn for it.
H36M_ACTION_FAMILY = {
    2: "reaching", 3: "gesturing", 4: "eating", 5: "arms_raised", 6: "phoning",
    7: "bending", 8: "lunging", 9: "bending", 10: "sitting", 11: "crouching",
    12: "phoning", 13: "standing", 14: "walking", 15: "walking", 16: "walking",
}


@dataclass(frozen=True)
class BodyShape:
    """One subject's proportions (metres).

    Attributes:
        lengths: bone name -> length.
        radii: capsule radius name -> radius, for rendering.
    """

    lengths: dict
    radii: dict


# Bone lengths of a 1.75 m adult, close to Human3.6M's averages.
_MEAN_LENGTHS = {
    "hip_width": 0.13, "thigh": 0.44, "shin": 0.44, "foot": 0.15,
    "lumbar": 0.23, "thoracic": 0.25, "neck": 0.12, "head": 0.115,
    "shoulder_width": 0.16, "upper_arm": 0.28, "forearm": 0.25,
}
_MEAN_RADII = {
    "thigh": (0.075, 0.05), "shin": (0.05, 0.038), "foot": (0.035, 0.03),
    "upper_arm": (0.045, 0.037), "forearm": (0.037, 0.028), "hand": (0.04, 0.04),
    "pelvis": (0.13, 0.13), "chest": (0.13, 0.15), "hips": (0.09, 0.09),
    "shoulders": (0.06, 0.06), "neck": (0.05, 0.045), "head": (0.1, 0.1),
}


def sample_body_shape(rng):
    """Draw a subject: height 1.55-1.92 m, each bone within a few percent of proportional.

    Left and right bones have equal lengths.
    """
    size = rng.uniform(1.55, 1.92) / 1.75
    build = rng.uniform(0.85, 1.2)
    lengths = {k: v * size * rng.normal(1.0, 0.035) for k, v in _MEAN_LENGTHS.items()}
    radii = {k: (a * size * build, b * size * build) for k, (a, b) in _MEAN_RADII.items()}
    return BodyShape(lengths=lengths, radii=radii)


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def clamp_angles(angles):
    """Clamp every angle (degrees) to ANGLE_LIMITS; unknown names raise ValueError."""
    unknown = set(angles) - set(ANGLE_LIMITS)
    if unknown:
        raise ValueError(f"unknown joint angles {sorted(unknown)}; valid names: {list(ANGLE_NAMES)}")
    return {k: float(np.clip(v, *ANGLE_LIMITS[k])) for k, v in angles.items()}


def forward_kinematics(shape, angles):
    """Joint positions of a posed body.

    Args:
        shape: BodyShape.
        angles: angle name -> degrees; missing names are 0 (clamped to ANGLE_LIMITS).

    Returns:
        joints: (17, 3) body-frame metres, pelvis at the origin.
        extras: dict of extra rendering points, (3,) each: ``l_toe``, ``r_toe``,
            ``l_hand``, ``r_hand``, ``head_centre``.
    """
    a = {k: np.radians(v) for k, v in clamp_angles({n: angles.get(n, 0.0) for n in ANGLE_NAMES}).items()}
    L = shape.lengths
    joints = np.zeros((NUM_JOINTS, 3))
    extras = {}
    down = np.array([0.0, -1.0, 0.0])
    up = np.array([0.0, 1.0, 0.0])

    root = _rx(a["root_pitch"]) @ _rz(a["root_roll"])
    # The trunk bend is shared between the lumbar and thoracic segments.
    half_trunk = _ry(a["spine_twist"] / 2) @ _rx(a["spine_flex"] / 2) @ _rz(a["spine_lat"] / 2)
    lumbar = root @ half_trunk
    thorax = lumbar @ half_trunk
    joints[7] = lumbar @ (up * L["lumbar"])
    joints[8] = joints[7] + thorax @ (up * L["thoracic"])
    head = thorax @ _ry(a["neck_yaw"]) @ _rx(a["neck_flex"])
    joints[9] = joints[8] + head @ np.array([0.0, L["neck"], 0.45 * L["neck"]])
    joints[10] = joints[9] + head @ np.array([0.0, L["head"], -0.3 * L["head"]])
    extras["head_centre"] = (joints[9] + joints[10]) / 2 + head @ np.array([0.0, 0.0, -0.03])

    for side, sign, hip, knee, ankle, shoulder, elbow, wrist in (
        ("l", 1.0, 4, 5, 6, 11, 12, 13), ("r", -1.0, 1, 2, 3, 14, 15, 16),
    ):
        joints[hip] = root @ np.array([sign * L["hip_width"], 0.0, 0.0])
        thigh = root @ _rz(sign * a[f"{side}_hip_abd"]) @ _rx(-a[f"{side}_hip_flex"]) \
            @ _ry(-sign * a[f"{side}_hip_rot"])
        shin = thigh @ _rx(a[f"{side}_knee"])
        joints[knee] = joints[hip] + thigh @ (down * L["thigh"])
        joints[ankle] = joints[knee] + shin @ (down * L["shin"])
        # The foot stays roughly level with the ground relative to the shin.
        extras[f"{side}_toe"] = joints[ankle] + shin @ np.array([0.0, -0.04, L["foot"]])

        joints[shoulder] = joints[8] + thorax @ np.array([sign * L["shoulder_width"], -0.02, 0.0])
        upper = thorax @ _rz(sign * a[f"{side}_sh_abd"]) @ _rx(-a[f"{side}_sh_flex"]) \
            @ _ry(-sign * a[f"{side}_sh_rot"])
        fore = upper @ _rx(-a[f"{side}_elbow"])
        joints[elbow] = joints[shoulder] + upper @ (down * L["upper_arm"])
        joints[wrist] = joints[elbow] + fore @ (down * L["forearm"])
        extras[f"{side}_hand"] = joints[wrist] + fore @ (down * 0.07 * L["forearm"] / 0.25)
    return joints, extras


def _both(spec, name, value):
    spec[f"l_{name}"] = value
    spec[f"r_{name}"] = value


def family_angle_spec(family, rng):
    """Mean and spread of every joint angle for one draw of an action family.

    Some families choose a variant first (which arm reaches, the gait phase), so
    the returned spec depends on ``rng``. Returns angle name -> (mean, std) degrees.
    """
    spec = dict(_NEUTRAL)
    side, other = ("l", "r") if rng.random() < 0.5 else ("r", "l")
    if family in _LOWERED_FAMILIES:
        _lowered_family(family, spec, side, other, rng)
    else:
        _upright_family(family, spec, side, other, rng)
    return spec


# Families whose hips and knees bend well away from standing.
_LOWERED_FAMILIES = ("sitting", "eating", "crouching", "bending", "lunging")


def _upright_family(family, spec, side, other, rng):
    """``family_angle_spec`` for the families that stand or walk; fills ``spec`` in place."""
    if family == "standing":
        spec["spine_twist"] = (0.0, 6.0)
        spec["neck_yaw"] = (0.0, 20.0)
    elif family == "gesturing":
        spec[f"{side}_sh_flex"] = (rng.uniform(20, 90), 10.0)
        spec[f"{side}_elbow"] = (rng.uniform(30, 110), 15.0)
        spec[f"{other}_sh_flex"] = (rng.uniform(0, 60), 10.0)
        spec[f"{other}_elbow"] = (rng.uniform(10, 90), 15.0)
        spec["spine_twist"] = (0.0, 10.0)
    elif family == "reaching":
        spec[f"{side}_sh_flex"] = (rng.uniform(60, 150), 10.0)
        spec[f"{side}_sh_abd"] = (rng.uniform(0, 50), 8.0)
        spec[f"{side}_elbow"] = (10.0, 8.0)
        spec["spine_twist"] = (rng.uniform(-20, 20), 5.0)
        spec["spine_flex"] = (rng.uniform(0, 20), 5.0)
    elif family == "arms_raised":
        for s in ("l", "r"):
            if rng.random() < 0.5:
                spec[f"{s}_sh_abd"] = (rng.uniform(80, 160), 10.0)
                spec[f"{s}_sh_flex"] = (rng.uniform(0, 30), 8.0)
            else:
                spec[f"{s}_sh_flex"] = (rng.uniform(90, 170), 10.0)
                spec[f"{s}_sh_abd"] = (rng.uniform(5, 30), 8.0)
            spec[f"{s}_elbow"] = (rng.uniform(0, 60), 10.0)
    elif family == "phoning":
        spec[f"{side}_sh_flex"] = (35.0, 10.0)
        spec[f"{side}_sh_abd"] = (35.0, 10.0)
        spec[f"{side}_sh_rot"] = (30.0, 10.0)
        spec[f"{side}_elbow"] = (140.0, 6.0)
        spec["neck_flex"] = (10.0, 8.0)
    elif family == "walking":
        phase = rng.uniform(0, 2 * np.pi)
        stride = rng.uniform(18, 30)
        for s, sign in ((side, 1.0), (other, -1.0)):
            swing = sign * np.sin(phase)
            spec[f"{s}_hip_flex"] = (5.0 + stride * swing, 3.0)
            spec[f"{s}_knee"] = (8.0 + 45.0 * max(0.0, sign * np.cos(phase)), 5.0)
            # Arms swing against the legs.
            spec[f"{s}_sh_flex"] = (-0.7 * stride * swing, 4.0)
            spec[f"{s}_elbow"] = (20.0 + 15.0 * max(0.0, -swing), 5.0)
        spec["spine_flex"] = (6.0, 3.0)
    else:
        raise ValueError(f"unknown action family {family!r}; valid: {list(ACTION_FAMILIES)}")


def _lowered_family(family, spec, side, other, rng):
    """``family_angle_spec`` for the families in ``_LOWERED_FAMILIES``; fills ``spec`` in place."""
    if family in ("sitting", "eating"):
        _both(spec, "hip_flex", (88.0, 8.0))
        _both(spec, "knee", (90.0, 12.0))
        _both(spec, "hip_abd", (10.0, 6.0))
        _both(spec, "sh_flex", (35.0, 12.0))
        _both(spec, "elbow", (70.0, 15.0))
        spec["spine_flex"] = (rng.uniform(-5, 25), 5.0)
        if family == "eating":
            spec[f"{side}_sh_flex"] = (45.0, 8.0)
            spec[f"{side}_sh_abd"] = (15.0, 6.0)
            spec[f"{side}_elbow"] = (135.0, 6.0)
    elif family == "crouching":
        _both(spec, "hip_flex", (110.0, 10.0))
        _both(spec, "knee", (128.0, 10.0))
        _both(spec, "hip_abd", (18.0, 6.0))
        _both(spec, "sh_flex", (45.0, 15.0))
        _both(spec, "elbow", (50.0, 20.0))
        spec["spine_flex"] = (30.0, 8.0)
        spec["neck_flex"] = (-15.0, 8.0)
    elif family == "bending":
        bend = rng.uniform(35, 85)
        spec["spine_flex"] = (bend, 5.0)
        _both(spec, "hip_flex", (0.3 * bend, 5.0))
        _both(spec, "knee", (rng.uniform(5, 30), 5.0))
        # Arms hang (roughly with gravity) or reach towards the ground.
        _both(spec, "sh_flex", (bend + 0.3 * bend + rng.uniform(-10, 20), 10.0))
        _both(spec, "elbow", (15.0, 10.0))
        spec["neck_flex"] = (-20.0, 8.0)
    elif family == "lunging":
        spec[f"{side}_hip_flex"] = (rng.uniform(50, 80), 6.0)
        spec[f"{side}_knee"] = (rng.uniform(60, 90), 6.0)
        spec[f"{other}_hip_flex"] = (-20.0, 5.0)
        spec[f"{other}_knee"] = (rng.uniform(5, 30), 5.0)
        spec["spine_flex"] = (rng.uniform(0, 25), 5.0)
        _both(spec, "sh_abd", (rng.uniform(10, 80), 10.0))
        _both(spec, "elbow", (rng.uniform(0, 60), 10.0))


ACTION_FAMILIES = (
    "standing", "gesturing", "reaching", "arms_raised", "phoning", "walking",
    "sitting", "eating", "crouching", "bending", "lunging",
)


def sample_angles(family, rng):
    """Draw joint angles (degrees, within ANGLE_LIMITS) for one pose of an action family."""
    spec = family_angle_spec(family, rng)
    return clamp_angles({name: rng.normal(mean, std) for name, (mean, std) in spec.items()})


def sample_pose(family, shape, rng):
    """Draw a pose: (17, 3) body-frame joints (pelvis at 0) and the rendering extras.

    See forward_kinematics for the frame and the extras.
    """
    return forward_kinematics(shape, sample_angles(family, rng))

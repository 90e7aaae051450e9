"""BVH motion files of a track: the 17-joint Human3.6M hierarchy, rotations found from the lifted positions.

BVH (Biovision Hierarchy) is what Blender, Maya, MotionBuilder and Unity's
importers read: a skeleton of joints with fixed offsets from their parents, then
per frame the root's position and every joint's rotation. The maintained BVH
libraries (pybvh, bvhio) read, write and edit such files but none finds the
rotations from joint positions, which is the work here; the file itself is a
few lines of text. The tests read it back with pybvh.

- Hierarchy: ``common.core.skeleton.PARENTS`` rooted at the pelvis; joint names
  ``JOINT_NAMES`` in CamelCase (``RightHip``...). Wrists, ankles and the head end
  in an End Site that continues their bone by a fifth.
- Axes and units: Y up, X to the camera's right, Z towards the camera
  (camera axes turned 180 degrees about x), centimetres.
- Bone lengths are fixed per track: each bone's median length over the track.
- Rotations: each joint's world rotation turns its rest bone onto the lifted
  bone by the smallest rotation from where its parent's rotation carries it;
  the pelvis and the thorax, whose three children fix a rotation, take the
  least-squares one (Kabsch) over their children's directions, weighted by bone
  length times the joints each bone carries (the spine outweighs the hips). Channels
  ``Zrotation Xrotation Yrotation`` (intrinsic, M = Rz Rx Ry), degrees.
- The root's position is the track's camera-space root (``common.infer.camera_space``)
  where known, else the origin; frames the track missed are filled in linearly.

So the file reproduces the track's positions up to those fixed bone lengths and,
at the pelvis and thorax, up to their children's arrangement, which a lifted
pose does not keep exactly.
"""
import numpy as np
from scipy.spatial.transform import Rotation

from common.core.files import write_text
from common.core.skeleton import JOINT_NAMES, NUM_JOINTS, PARENTS

CHILDREN = tuple(tuple(c for c in range(NUM_JOINTS) if PARENTS[c] == j) for j in range(NUM_JOINTS))
BVH_NAMES = tuple("".join(part.capitalize() for part in name.split("_")) for name in JOINT_NAMES)
CAMERA_TO_BVH = np.diag([100.0, -100.0, -100.0])  # camera metres (y down, z forward) -> centimetres, Y up
END_SITE_FRACTION = 0.2


def camera_to_bvh(points):
    """Camera-space metres (..., 3) -> BVH centimetres (..., 3)."""
    return np.asarray(points, dtype=np.float64) @ CAMERA_TO_BVH


def bvh_to_camera(points):
    """BVH centimetres (..., 3) -> camera-space metres (..., 3)."""
    return np.asarray(points, dtype=np.float64) @ np.linalg.inv(CAMERA_TO_BVH)


def _subtree_sizes():
    sizes = [1] * NUM_JOINTS
    for j in reversed(range(1, NUM_JOINTS)):
        sizes[PARENTS[j]] += sizes[j]
    return tuple(sizes)


SUBTREE_SIZES = _subtree_sizes()  # joints at or below each joint: the spine carries 10, a hip 3


def _kabsch(rest, current, weights):
    """Rotation (3, 3) taking the directions ``rest`` (K, 3) best onto ``current`` (K, 3), weighted (K,)."""
    rest = rest / np.linalg.norm(rest, axis=1, keepdims=True)
    current = current / np.linalg.norm(current, axis=1, keepdims=True)
    u, _, vt = np.linalg.svd((rest * np.asarray(weights)[:, None]).T @ current)
    flip = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, flip]) @ u.T


def _align(a, b):
    """The smallest rotation (3, 3) turning direction ``a`` onto ``b``."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis, cosine = np.cross(a, b), float(np.dot(a, b))
    sine = np.linalg.norm(axis)
    if sine < 1e-12:
        if cosine > 0:
            return np.eye(3)
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        return Rotation.from_rotvec(np.pi * axis / np.linalg.norm(axis)).as_matrix()
    return Rotation.from_rotvec(axis / sine * np.arctan2(sine, cosine)).as_matrix()


def _weights(offsets, children):
    """Weights of a branch's children in its rotation: bone length times the joints the bone carries.

    A misfit of the spine's direction moves the 10 joints above it by up to its length, a hip's only its leg,
    so the spine is followed closely and the short hips take most of the misfit.
    """
    return [np.linalg.norm(offsets[c]) * SUBTREE_SIZES[c] for c in children]


def world_rotations(pose, offsets):
    """World rotations (17, 3, 3) of one pose (17, 3) for the rest ``offsets`` (17, 3) (module docstring)."""
    rotations = np.empty((NUM_JOINTS, 3, 3))
    for j in range(NUM_JOINTS):  # PARENTS lists every parent before its children
        parent = np.eye(3) if PARENTS[j] < 0 else rotations[PARENTS[j]]
        children = CHILDREN[j]
        if len(children) > 1:
            rotations[j] = _kabsch(offsets[list(children)], pose[list(children)] - pose[j], _weights(offsets, children))
        elif children:
            c = children[0]
            rotations[j] = _align(parent @ offsets[c], pose[c] - pose[j]) @ parent
        else:
            rotations[j] = parent
    return rotations


def rest_offsets(poses):
    """Rest offsets (17, 3) of a track (T, 17, 3): median bone lengths; directions of the first pose,
    and at the pelvis and thorax their children's mean arrangement in the joint's own frame."""
    bones = poses - poses[:, [max(p, 0) for p in PARENTS]]  # (T, 17, 3), root row 0
    lengths = np.median(np.linalg.norm(bones, axis=-1), axis=0)  # (17,)
    directions = bones[0] / np.maximum(np.linalg.norm(bones[0], axis=-1, keepdims=True), 1e-12)
    offsets = directions * lengths[:, None]
    for _ in range(2):
        for j, children in enumerate(CHILDREN):
            if len(children) > 1:
                local = [_kabsch(offsets[list(children)], bones[t, list(children)], _weights(offsets, children)).T
                         @ bones[t, list(children)].T
                         for t in range(len(poses))]
                mean = np.mean(local, axis=0).T  # (K, 3)
                offsets[list(children)] = mean / np.linalg.norm(mean, axis=1, keepdims=True) * lengths[list(children), None]
    offsets[0] = 0.0
    return offsets


def fill_missing(frames, poses, roots):
    """Every frame from the first to the last of a track: poses (F, 17, 3) and roots (F, 3), linear in the gaps."""
    frames = np.asarray(frames)
    full = np.arange(frames[0], frames[-1] + 1)
    fill = lambda values: np.stack([np.interp(full, frames, column) for column in  # noqa: E731
                                    values.reshape(len(frames), -1).T], axis=-1).reshape((len(full),) + values.shape[1:])
    return full, fill(np.asarray(poses, np.float64)), fill(np.asarray(roots, np.float64))


def bvh_text(poses, roots, fps):
    """BVH text of a track: poses (T, 17, 3) root-relative and roots (T, 3), camera metres; ``fps`` frames/s."""
    poses = camera_to_bvh(poses)
    roots = camera_to_bvh(roots)
    poses = poses - poses[:, :1]
    offsets = rest_offsets(poses)
    lines = ["HIERARCHY"]

    def joint(j, depth):
        pad = "  " * depth
        kind = "ROOT" if PARENTS[j] < 0 else "JOINT"
        channels = "6 Xposition Yposition Zposition" if PARENTS[j] < 0 else "3"
        lines.extend([f"{pad}{kind} {BVH_NAMES[j]}", f"{pad}{{", f"{pad}  OFFSET " + _numbers(offsets[j]),
                      f"{pad}  CHANNELS {channels} Zrotation Xrotation Yrotation"])
        for child in CHILDREN[j]:
            joint(child, depth + 1)
        if not CHILDREN[j]:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET " +
                          _numbers(END_SITE_FRACTION * offsets[j]), f"{pad}  }}"])
        lines.append(f"{pad}}}")

    joint(0, 0)
    lines += ["MOTION", f"Frames: {len(poses)}", f"Frame Time: {1.0 / fps:.6f}"]
    for pose, root in zip(poses, roots):
        world = world_rotations(pose, offsets)
        local = [world[j] if PARENTS[j] < 0 else world[PARENTS[j]].T @ world[j] for j in range(NUM_JOINTS)]
        angles = Rotation.from_matrix(np.stack(local)).as_euler("ZXY", degrees=True)  # (17, 3)
        lines.append(_numbers(np.concatenate([root, angles.reshape(-1)])))
    return "\n".join(lines) + "\n"


def _numbers(values):
    return " ".join(f"{v:.6f}" for v in np.asarray(values).reshape(-1))


def write_bvh(path, frames, poses, roots=None, fps=25.0):
    """Write one track as a BVH file (module docstring); returns its Path.

    frames: (T,) increasing frame numbers; poses: (T, 17, 3) root-relative, camera metres;
    roots: (T, 3) camera-space root positions in metres, or None (at the origin); fps: the video's frame rate.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (NUM_JOINTS, 3) or len(frames) != len(poses) or not len(poses):
        raise ValueError(f"expected poses (T, 17, 3) and T frame numbers, got {poses.shape} and {len(frames)}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    roots = np.zeros((len(poses), 3)) if roots is None else np.asarray(roots, dtype=np.float64)
    _, poses, roots = fill_missing(frames, poses, roots)
    return write_text(path, bvh_text(poses, roots, fps))

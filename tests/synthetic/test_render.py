"""The capsule rasterizer: coverage, depth ordering, shading."""
import numpy as np
import pytest

from common.synthetic.render import Capsules, new_depth_buffer, render_capsules

FOCAL = 1000.0


def capsules(*specs):
    """Capsules from (p0, p1, z, radius, colour) tuples with constant depth and radius."""
    return Capsules(
        p0=np.array([s[0] for s in specs], dtype=float), p1=np.array([s[1] for s in specs], dtype=float),
        z0=np.array([s[2] for s in specs], dtype=float), z1=np.array([s[2] for s in specs], dtype=float),
        r0=np.array([s[3] for s in specs], dtype=float), r1=np.array([s[3] for s in specs], dtype=float),
        colour=np.array([s[4] for s in specs], dtype=float),
    )


def draw(caps, size=(80, 100)):
    canvas = np.zeros(size + (3,), dtype=np.float32)
    depth = new_depth_buffer(*size)
    render_capsules(canvas, depth, caps, FOCAL, reference_depth=5.0)
    return canvas, depth


def test_sphere_covers_a_disc_of_its_radius():
    _, depth = draw(capsules(((50, 40), (50, 40), 5.0, 12.0, (1, 1, 1))))
    area = np.isfinite(depth).sum()
    assert area == pytest.approx(np.pi * 12.0 ** 2, rel=0.05)
    # The nearest point of the sphere is its centre, a radius (in metres) in front of the axis.
    assert depth[40, 50] == pytest.approx(5.0 - 12.0 * 5.0 / FOCAL, abs=1e-4)


def test_pixels_outside_every_capsule_are_untouched():
    canvas, depth = draw(capsules(((20, 20), (60, 20), 5.0, 5.0, (1, 0, 0))))
    assert np.all(canvas[40:] == 0) and np.all(np.isinf(depth[40:]))
    assert np.all(canvas[20, 25:55, 0] > 0)


@pytest.mark.parametrize("red_depth, blue_depth, winner", [(4.0, 6.0, 0), (6.0, 4.0, 2)])
def test_nearer_capsule_hides_the_farther_whatever_the_drawing_order(red_depth, blue_depth, winner):
    red = ((10, 40), (90, 40), red_depth, 6.0, (1, 0, 0))
    blue = ((50, 5), (50, 75), blue_depth, 6.0, (0, 0, 1))
    for order in ((red, blue), (blue, red)):
        canvas, _ = draw(capsules(*order))
        crossing = canvas[40, 50]
        assert crossing[winner] > 0 and crossing[2 - winner] == 0


def test_nearer_surfaces_are_brighter():
    canvas, _ = draw(capsules(((25, 40), (25, 40), 4.5, 10.0, (0.5, 0.5, 0.5)),
                              ((75, 40), (75, 40), 5.5, 10.0, (0.5, 0.5, 0.5))))
    assert canvas[40, 25].mean() > canvas[40, 75].mean() * 1.2


def test_canvas_and_depth_buffer_must_agree():
    with pytest.raises(ValueError, match="canvas must be"):
        render_capsules(np.zeros((10, 10, 3), np.float32), new_depth_buffer(10, 12),
                        capsules(((5, 5), (5, 5), 5.0, 2.0, (1, 1, 1))), FOCAL)

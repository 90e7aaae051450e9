"""Smoothing one track's 3D poses over time: a One-Euro filter and a Savitzky-Golay filter.

Both take a track's means (T, 17, 3) in metres, frame by frame, and return the
same shape; the hypotheses and their spread are left as the model gave them.

- ``one-euro`` (Casiez, Roussel and Vogel, CHI 2012): an exponential smoother
  whose cut-off frequency rises with the speed, so slow motion loses its jitter
  and fast motion keeps up. Causal (each frame sees only the past), so it works
  live. Defaults: ``min_cutoff`` 0.5 Hz, ``beta`` 8 s/m, ``d_cutoff`` 1.0 Hz.
- ``savgol``: ``scipy.signal.savgol_filter``, a least-squares polynomial of
  ``polyorder`` 2 fitted over a window of ``window`` 11 frames around each frame
  (``mode="interp"`` at the ends). Looks ahead, so it lags nothing.

The defaults were chosen on the demo model's synthetic walking clips of seed 0 in
``benchmarks.video`` (docs/inference.md, Videos): the One-Euro filter's lag costs
MPJPE on walking limbs unless ``beta`` lets its cut-off rise quickly with speed.
"""
from dataclasses import dataclass

import numpy as np
from scipy.signal import savgol_filter

SMOOTHERS = ("one-euro", "savgol")


@dataclass(frozen=True)
class SmoothingConfig:
    """Which filter and its settings (module docstring).

    method: "one-euro" or "savgol". min_cutoff, d_cutoff: Hz; beta: s/m.
    window: frames (odd, >= polyorder + 2); polyorder: degree of the fitted polynomial.
    """

    method: str = "savgol"
    min_cutoff: float = 0.5
    beta: float = 8.0
    d_cutoff: float = 1.0
    window: int = 11
    polyorder: int = 2

    def __post_init__(self):
        if self.method not in SMOOTHERS:
            raise ValueError(f"smoothing must be one of {SMOOTHERS}, got {self.method!r}")
        if self.min_cutoff <= 0 or self.d_cutoff <= 0 or self.beta < 0:
            raise ValueError(f"min_cutoff and d_cutoff must be > 0 Hz and beta >= 0, got {self.min_cutoff}, "
                             f"{self.d_cutoff}, {self.beta}")
        if self.window < 3 or self.window % 2 == 0 or self.polyorder < 0 or self.polyorder >= self.window - 1:
            raise ValueError(f"window must be odd and >= 3 with 0 <= polyorder < window - 1, got window "
                             f"{self.window}, polyorder {self.polyorder}")

    def describe(self):
        """The settings that apply to ``method``, for the outputs' headers."""
        if self.method == "one-euro":
            return {"method": self.method, "min_cutoff_hz": self.min_cutoff, "beta": self.beta,
                    "d_cutoff_hz": self.d_cutoff}
        return {"method": self.method, "window_frames": self.window, "polyorder": self.polyorder}


def _alpha(cutoff, interval):
    """Exponential smoothing factor of a first-order low-pass at ``cutoff`` Hz over ``interval`` seconds."""
    tau = 1.0 / (2 * np.pi * cutoff)
    return 1.0 / (1.0 + tau / interval)


def one_euro(poses, times, min_cutoff=0.5, beta=8.0, d_cutoff=1.0):
    """One-Euro filter of poses (T, ...) sampled at ``times`` (T,) seconds (increasing); returns (T, ...).

    Every coordinate is filtered on its own; the cut-off of each follows its own speed (units per second).
    """
    poses = np.asarray(poses, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if len(times) != len(poses) or np.any(np.diff(times) <= 0):
        raise ValueError(f"times must be increasing, one per pose ({len(poses)}), got {len(times)}")
    out = np.empty_like(poses)
    out[0] = previous = poses[0]
    speed = np.zeros_like(poses[0])
    for t in range(1, len(poses)):
        interval = times[t] - times[t - 1]
        raw_speed = (poses[t] - previous) / interval
        speed = speed + _alpha(d_cutoff, interval) * (raw_speed - speed)
        alpha = _alpha(min_cutoff + beta * np.abs(speed), interval)
        previous = out[t] = previous + alpha * (poses[t] - previous)
    return out


def savgol(poses, window=11, polyorder=2):
    """Savitzky-Golay filter of poses (T, ...) along time; a track shorter than ``window`` gets the longest odd window it holds."""
    poses = np.asarray(poses, dtype=np.float64)
    length = len(poses) if len(poses) % 2 else len(poses) - 1
    window = min(window, length)
    if window <= polyorder:
        return poses.copy()
    return savgol_filter(poses, window, polyorder, axis=0, mode="interp")


def smooth_track(poses, frames, fps, config):
    """Smooth one track's poses (T, 17, 3) at frame numbers ``frames`` (T,) of a ``fps`` video; returns (T, 17, 3)."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if config.method == "one-euro":
        return one_euro(poses, np.asarray(frames, dtype=np.float64) / fps, config.min_cutoff, config.beta,
                        config.d_cutoff)
    return savgol(poses, config.window, config.polyorder)

"""Identities across the frames of a video: each person gets a track id that stays with them.

Each frame's persons are matched to the live tracks by one optimal assignment
(``scipy.optimize.linear_sum_assignment``) on a similarity that mixes the
overlap of their boxes (IoU) and of their 2D keypoints (COCO's object keypoint
similarity, OKS, with one falloff for every joint); a track's box and keypoints
are predicted at their last velocity, so two people whose paths cross keep their
ids. A person matched to no track (similarity under ``min_similarity``) starts a
new track with a new id; a track missed for more than ``max_missed`` frames ends.
Ids given with the input (PoseTrack's and MMPose's ``track_id``) are kept as they
are, and new ids are never one of them.
"""
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

OKS_FALLOFF = 0.1  # COCO's per-joint constants are 0.025-0.107; one value for the 17 H36M joints


class TrackError(ValueError):
    """Track ids given with the input that cannot be used (repeated in a frame, not integers)."""


@dataclass
class Track:
    """A live track: its last box (x0, y0, x1, y1) and keypoints (17, 2) pixels, and their velocities per frame."""

    id: int
    box: np.ndarray
    keypoints: object
    frame: int
    box_velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))
    keypoint_velocity: object = None

    def predicted(self, frame):
        """(box, keypoints) moved on to ``frame`` at the last velocity."""
        gap = frame - self.frame
        keypoints = self.keypoints
        if keypoints is not None and self.keypoint_velocity is not None:
            keypoints = keypoints + gap * self.keypoint_velocity
        return self.box + gap * self.box_velocity, keypoints

    def observe(self, box, keypoints, frame):
        gap = max(frame - self.frame, 1)
        self.box_velocity = 0.5 * self.box_velocity + 0.5 * (box - self.box) / gap
        if keypoints is not None and self.keypoints is not None:
            step = (keypoints - self.keypoints) / gap
            self.keypoint_velocity = step if self.keypoint_velocity is None else 0.5 * self.keypoint_velocity + 0.5 * step
        self.box, self.keypoints, self.frame = box, keypoints, frame


def box_iou(a, b):
    """Intersection over union of boxes (x0, y0, x1, y1): (N, 4), (M, 4) -> (N, M)."""
    a, b = np.asarray(a, dtype=np.float64)[:, None], np.asarray(b, dtype=np.float64)[None]
    width = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    height = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = width * height
    area = lambda box: (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def keypoint_similarity(a, b, area):
    """OKS of keypoints a (17, 2) and b (17, 2) pixels for an object of ``area`` square pixels, in [0, 1]."""
    squared = ((np.asarray(a) - np.asarray(b)) ** 2).sum(-1)
    return float(np.exp(-squared / (2 * max(area, 1.0) * OKS_FALLOFF ** 2 * 4)).mean())


class Tracker:
    """Assigns track ids frame by frame (module docstring).

    Args:
        max_missed: frames a track may go unseen and still be continued.
        min_similarity: least similarity (0..1) of a person to a track to continue it.
        box_weight: weight of the box IoU in the similarity; the keypoints' OKS has the rest
            (the box alone where a side has no keypoints).
    """

    def __init__(self, max_missed=5, min_similarity=0.1, box_weight=0.5):
        if max_missed < 0 or not 0 <= min_similarity <= 1 or not 0 <= box_weight <= 1:
            raise ValueError(f"max_missed >= 0 and min_similarity, box_weight in [0, 1], got {max_missed}, "
                             f"{min_similarity}, {box_weight}")
        self.max_missed, self.min_similarity, self.box_weight = max_missed, min_similarity, box_weight
        self.tracks, self.next_id = {}, 0

    def similarity(self, track, frame, box, keypoints):
        predicted_box, predicted_keypoints = track.predicted(frame)
        iou = box_iou(predicted_box[None], box[None])[0, 0]
        if keypoints is None or predicted_keypoints is None:
            return iou
        area = (box[2] - box[0]) * (box[3] - box[1])
        oks = keypoint_similarity(predicted_keypoints, keypoints, area)
        return self.box_weight * iou + (1 - self.box_weight) * oks

    def update(self, frame, boxes, keypoints=None, given=None):
        """Track ids of the persons of ``frame`` (frame numbers increase; gaps are missed frames).

        boxes: (N, 4) x0, y0, x1, y1 pixels; keypoints: N x ((17, 2) pixels or None), or None;
        given: N x (int id or None), or None. Returns a list of N ints.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        keypoints = [None] * len(boxes) if keypoints is None else list(keypoints)
        given = [None] * len(boxes) if given is None else list(given)
        self._check_given(frame, given)
        ids = list(given)
        live = [t for t in self.tracks.values() if t.id not in given]
        free = [i for i, g in enumerate(given) if g is None]
        if live and free:
            scores = np.array([[self.similarity(t, frame, boxes[i], keypoints[i]) for i in free] for t in live])
            for row, column in zip(*linear_sum_assignment(-scores)):
                if scores[row, column] >= self.min_similarity:
                    ids[free[column]] = live[row].id
        for i, track_id in enumerate(ids):
            if track_id is None:
                track_id = ids[i] = self.next_id
            self.next_id = max(self.next_id, track_id + 1)
            if track_id in self.tracks:
                self.tracks[track_id].observe(boxes[i], keypoints[i], frame)
            else:
                self.tracks[track_id] = Track(track_id, boxes[i], keypoints[i], frame)
        self.tracks = {k: t for k, t in self.tracks.items() if frame - t.frame <= self.max_missed}
        return ids

    @staticmethod
    def _check_given(frame, given):
        known = [g for g in given if g is not None]
        if any(not isinstance(g, (int, np.integer)) or isinstance(g, bool) or g < 0 for g in known):
            raise TrackError(f"frame {frame}: track ids must be integers >= 0, got {known}")
        if len(set(known)) != len(known):
            raise TrackError(f"frame {frame}: the track ids {known} repeat an id; each person of a frame needs its own")


def track_boxes(centers, scales, pixel_std=200.0):
    """Boxes (N, 4) x0, y0, x1, y1 of crop boxes given as centers (N, 2) and HRNet scales (N, 2) = size / 200."""
    centers, sizes = np.asarray(centers, dtype=np.float64), np.asarray(scales, dtype=np.float64) * pixel_std
    return np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=-1)

"""The in-memory feature cache of ``train.cache_features``: backbone features of each training sample, kept after the first epoch."""
import torch


class FeatureCache:
    """A training set held in memory: per sample, the backbone features of the view it was trained on.

    Filled during the first epoch from the batches the loader gives (and the
    features the backbone computed for them anyway); later epochs draw shuffled
    batches from it without decoding an image or running the backbone. Each
    sample keeps the (possibly flipped) view of its first epoch. Features stay
    on the device they were computed on.
    """

    def __init__(self):
        self._parts = []  # one dict of tensors per cached batch
        self.complete = False
        self._data = None

    def add(self, features, keypoints, ref, pose):
        """Store one batch: features (4 maps (B, C_l, h_l, w_l)), keypoints (B, 1, J, 2), ref (B, J, 2), pose (B, 1, J, 3)."""
        self._parts.append({"features": [f.detach() for f in features], "keypoints": keypoints,
                            "ref": ref, "pose": pose})

    def finish(self):
        """Concatenate what was stored; called at the end of the filling epoch."""
        if not self._parts:
            raise RuntimeError("the feature cache is empty: the first epoch produced no batches")
        parts = self._parts
        self._data = {
            "features": [torch.cat([p["features"][level] for p in parts]) for level in range(len(parts[0]["features"]))],
            **{key: torch.cat([p[key] for p in parts]) for key in ("keypoints", "ref", "pose")},
        }
        self._parts = []
        self.complete = True

    def __len__(self):
        return 0 if self._data is None else len(self._data["pose"])

    def batches(self, batch_size, generator):
        """Yield dicts (features, keypoints, ref, pose) of ``batch_size`` samples in a random order."""
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size].to(self._data["pose"].device)
            yield {"features": [f[index] for f in self._data["features"]],
                   **{key: self._data[key][index] for key in ("keypoints", "ref", "pose")}}

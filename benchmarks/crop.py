"""Benchmark: cropping one Human3.6M frame (1000 x 1002) to the 192 x 256 HRNet input.

``common.core.geometry.crop_image`` runs once per decoded sample in the loader, so
its time bounds how many images a loader worker can serve. Prints the best of
``--repeats`` rounds of ``--calls`` crops, in milliseconds per crop.

    python -m benchmarks.crop
"""
import argparse
import time

import numpy as np

from common.core.geometry import crop_image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="crops per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the fastest is reported")
    args = parser.parse_args(argv)
    frame = np.random.default_rng(0).integers(0, 256, size=(1002, 1000, 3)).astype(np.uint8)
    crop_image(frame, [500, 500], [3.0, 4.0])  # warm-up
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.calls):
            crop_image(frame, [500, 500], [3.0, 4.0])
        best = min(best, (time.perf_counter() - start) / args.calls)
    print(f"crop_image, 1000 x 1002 frame -> 192 x 256: {1000 * best:.2f} ms per crop "
          f"(best of {args.repeats} x {args.calls})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fast, exact image decoding for the loader: JPEG frames through OpenCV's libjpeg-turbo.

``cv2.imdecode`` gives the same pixels as Pillow (the original's decoder: both
libjpeg-turbo, accurate integer IDCT, fancy upsampling) for baseline and
progressive RGB JPEGs, in about 40 % of Pillow's time on a 1000 x 1002 frame
(docs/benchmarks.md, Loader). Pillow still reads the header first: it names
the format and colour mode and refuses decompression bombs before any pixel
is decoded. Other images (PNG, greyscale or CMYK JPEG) decode with Pillow as
before, so that every mode converts to RGB exactly as the original's does.
DCT-domain scaling (``IMREAD_REDUCED_*``, Pillow's ``draft``) is not exact and
is never used. A truncated JPEG is refused as before; like Pillow, libjpeg-turbo
decodes most corrupt data segments with a warning rather than an error (of 30
random single-byte corruptions of a frame, Pillow refused 1 that OpenCV decoded).
"""
import io

import cv2
import numpy as np
from PIL import Image

# The original decodes with Pillow, which ignores EXIF orientation: so must OpenCV here.
_JPEG_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION


def decode_rgb(data):
    """Encoded image bytes -> (H, W, 3) uint8 RGB array, pixel for pixel what Pillow decodes.

    Raises:
        Pillow's errors (``UnidentifiedImageError``, ``DecompressionBombError``, ``OSError``)
        for what it cannot read; ValueError when OpenCV cannot decode a JPEG Pillow accepted.
    """
    with Image.open(io.BytesIO(data)) as image:
        if image.format != "JPEG" or image.mode != "RGB":
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        size = image.size
    frame = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _JPEG_FLAGS)
    if frame is None or frame.shape[1::-1] != size:
        found = "nothing" if frame is None else f"{frame.shape[1]}x{frame.shape[0]}"
        raise ValueError(f"OpenCV decoded {found} from a {size[0]}x{size[1]} JPEG (truncated or corrupt data)")
    return frame

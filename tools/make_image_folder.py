"""Kept for old notes: the same as ``convtrain data make-folder`` (which ships in the wheel; use that).

    python tools/make_image_folder.py OUT --dataset fashion_mnist --train 2000 --test 2000
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from convtrain.cli.app import main

    sys.argv[1:1] = ["data", "make-folder"]
    main()

"""The bare side of bench/worker_memory.py: the smallest Flask app doing the same requests.

``POST /deliver`` parses the JSON body and answers it, as a job endpoint without the
framework would; ``POST /image`` does process-image's Pillow work on a file named by the
body (decode, 1024 px WebP, 256 px WebP thumbnail), importing Pillow when first asked, so
an idle worker is Flask alone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

app = Flask(__name__)


@app.get("/")
def ready() -> ResponseReturnValue:
    return "ok"


@app.post("/deliver")
def deliver() -> ResponseReturnValue:
    return jsonify(request.get_json())


@app.post("/image")
def image() -> ResponseReturnValue:
    from PIL import Image  # only the image requests pay for Pillow

    payload: dict[str, Any] = request.get_json()
    with Image.open(Path(payload["path"])) as source:
        source.draft("RGB", (1024, 1024))
        source.load()
        width = min(1024, source.width)
        main = source.resize((width, max(1, source.height * width // source.width)))
        side = min(main.size)
        box = ((main.width - side) // 2, (main.height - side) // 2)
        thumb = main.resize((256, 256), box=(*box, box[0] + side, box[1] + side))
    sizes = []
    for output in (main, thumb):
        buffer = io.BytesIO()
        output.save(buffer, "WEBP", quality=80, method=4)
        sizes.append(len(buffer.getvalue()))
    return jsonify(bytes=sizes)

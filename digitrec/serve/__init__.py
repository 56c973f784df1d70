"""Predictions over HTTP: `digitrec-serve` runs a FastAPI app with a draw-a-digit page and a JSON API.

    digitrec-serve --checkpoint outputs/<run>      # then open http://127.0.0.1:8000/

`app.py` holds the app, `__main__.py` its command line, `static/` the page, and `load.py` the
load benchmark (`python -m digitrec.bench.load`). Nothing here imports Lightning or Hydra.
"""

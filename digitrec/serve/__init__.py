"""Predictions over HTTP: `digitrec-serve` runs a FastAPI app with a draw-a-digit page and a JSON API.

    digitrec-serve --checkpoint outputs/<run>      # then open http://127.0.0.1:8000/

`app.py` holds the app, `feedback.py` its feedback endpoints (into `digitrec.feedback.store`),
`__main__.py` its command line and `static/` the page; the load benchmark is `python -m
digitrec.bench.load`. Nothing here imports Lightning or Hydra.
"""

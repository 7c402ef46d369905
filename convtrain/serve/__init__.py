"""``convtrain serve``: the prediction API and pages (:mod:`.app`) and the process that serves them (:mod:`.server`).

FastAPI and uvicorn come with the ``serve`` extra; importing this package imports neither.
"""

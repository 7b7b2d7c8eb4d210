"""The HTTP front door (FastAPI) on top of `gdx_pipeline.core`; start it with `gdx-api`."""

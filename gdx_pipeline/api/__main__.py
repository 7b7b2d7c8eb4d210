"""`python -m gdx_pipeline.api` is `gdx-api`."""

import sys

from gdx_pipeline.api.server import main

sys.exit(main())

"""The API's routes, one router per subject; the plumbing they share (settings, dependencies,
authentication, body limits, errors, the link to Dagster) sits one level up, in `api/`."""

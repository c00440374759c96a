"""Control plane tests: artefacts, jobs, the OpenAPI surface."""

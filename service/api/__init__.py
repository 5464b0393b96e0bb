"""HTTP API: thin routers over :class:`service.pipeline.QA`."""

"""Jobs: the lifecycle (every state change), routing of results, and what the CLI and the HTTP
API show and do with jobs (summaries, list filters, the result-slice preview)."""

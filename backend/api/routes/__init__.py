"""The API's routers, one per noun; each route calls the backend verb the CLI and the WebUI call."""

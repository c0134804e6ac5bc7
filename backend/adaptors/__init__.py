"""Heavy third-party packages behind lazy adaptors (as SkyPilot's `sky/adaptors/`): importing lfops stays fast and
each such package is imported in exactly one module of lfops."""

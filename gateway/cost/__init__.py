"""Token usage and budget library; imports nothing from aiohttp."""

"""Configuration: YAML in, validated frozen ``Settings`` out, swapped whole on reload."""

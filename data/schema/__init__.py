"""The capture-event JSON Schema (v1), shipped with the package: `data.records.SCHEMA_PATH`."""

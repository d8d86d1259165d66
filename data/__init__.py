"""The data stage: validate capture logs and build SFT, DPO and KTO datasets from them.

Public API (other stages and users code against these names):
    data.build.build_datasets(inputs, out, config=None, **overrides) -> manifest dict
    data.build.BuildConfig            (= data.config.BuildConfig; BuildConfig.from_yaml(path))
    data.validate.validate_paths(paths) -> ValidationReport
    data.events.load_events(paths) -> polars.DataFrame, one typed row per valid event
    data.records                      typed records and the per-event check; the JSON Schema ships in data/schema/
"""

"""Which evaluation settings decide a result: a sweep reuses an evaluation whose settings
:meth:`EvalConfig.reproduces` accepts."""

from pipeline.evaluation import EvalConfig


def test_memory_and_speed_settings_do_not_change_the_results():
    made = EvalConfig(batch_size=8, chunk=32, workers=2, road_chunk=0).result_settings()
    assert EvalConfig(batch_size=2, chunk=4, workers=0, road_chunk=16).reproduces(made)
    assert not {"batch_size", "chunk", "workers", "road_chunk"} & set(made)


def test_a_result_setting_must_agree_and_numbers_compare_as_json_does():
    made = EvalConfig(step=1792, tolerance=15.0).result_settings()
    assert EvalConfig(step=1792, tolerance=15).reproduces(made)
    assert not EvalConfig(step=896).reproduces(made)
    assert not EvalConfig(value_alphas=(0.1, 0.25)).reproduces(made)
    assert not EvalConfig(metrics="deletion,road").reproduces(made)


def test_a_record_older_than_a_setting_counts_as_its_default():
    older = {k: v for k, v in EvalConfig().result_settings().items() if k != "metrics" and not k.startswith("road")}
    assert EvalConfig().reproduces(older)
    assert EvalConfig(road_noise=0.01).reproduces(older)  # the default, given explicitly
    assert not EvalConfig(metrics="deletion,insertion,road").reproduces(older)
    assert not EvalConfig(road_noise=0.0).reproduces(older)

"""The backend command line the plugin builds from its parameters."""
from plugin.params import PredictParams, SceneInput


def _params(**kw):
    return PredictParams(scene=SceneInput(vv="s1.tif"), mask="mask.tif", **kw)


def test_batch_size_left_to_the_backend_unless_chosen():
    # the backend picks 1 tile per call on CPU (measured faster there) and 4 on CUDA
    assert "--batch-size" not in _params().argv()
    argv = _params(batch_size=2).argv()
    assert argv[argv.index("--batch-size") + 1] == "2"

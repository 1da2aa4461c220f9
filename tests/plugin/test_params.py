"""The backend command line the plugin builds from its parameters."""
from plugin.params import PredictParams, SceneInput


def _params(**kw):
    return PredictParams(scene=SceneInput(vv="s1.tif"), mask="mask.tif", **kw)


def test_batch_size_left_to_the_backend_unless_chosen():
    # the backend picks 1 tile per call on CPU (measured faster there) and 4 on CUDA
    assert "--batch-size" not in _params().argv()
    argv = _params(batch_size=2).argv()
    assert argv[argv.index("--batch-size") + 1] == "2"


def test_the_file_behind_a_dataset_name(tmp_path):
    """Accept compares its outputs with the scene's files: a scene in a GeoPackage's raster
    tables ('GPKG:/x/scene.gpkg:vv') lost them to the polygons of a final mask 'scene.tif'."""
    from plugin.params import dataset_file
    gpkg = tmp_path / "scene.gpkg"
    assert dataset_file(f"GPKG:{gpkg}:vv") == str(gpkg)
    assert dataset_file(f'NETCDF:"{tmp_path}/s.nc":Sigma0_VV_db') == f"{tmp_path}/s.nc"
    assert dataset_file(str(tmp_path / "s1.tif")) == str(tmp_path / "s1.tif")
    assert dataset_file("/vsizip//data/x.zip/a.tif") == "/vsizip//data/x.zip/a.tif"

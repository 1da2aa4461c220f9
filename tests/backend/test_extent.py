"""Extents in other CRSs and across the antimeridian, and grids the inputs refuse or take."""
import pytest
from rasterio.crs import CRS
from rasterio.transform import Affine
from rasterio.warp import transform

from backend.errors import InputError, UsageError
from backend.grid import Grid, extent_window
from backend.inputs import open_inputs
from tests.backend.conftest import random_db, write_raster

PX = 8.983152841195214e-05  # Sen1Floods11's pixel, in degrees
WGS84 = CRS.from_epsg(4326)


def fiji(west: float) -> Grid:
    """557 x 557 pixels of longitude and latitude from (west, -16) to the south-east."""
    return Grid(WGS84, Affine(PX, 0, west, 0, -PX, -16.0), 557, 557)


def columns(window) -> tuple[int, int]:
    return int(window.col_off), int(window.col_off + window.width)


def utm1s_box(lon0: float, lon1: float) -> tuple[float, ...]:
    """The UTM zone 1S box around longitudes lon0..lon1 (east past 180) at 16.01-16.04 S."""
    xs, ys = transform(WGS84, "EPSG:32701", [lon0, lon1, lon0, lon1],
                       [-16.04, -16.04, -16.01, -16.01])
    return min(xs), min(ys), max(xs), max(ys)


def test_a_box_across_the_antimeridian_is_matched_to_the_rasters_side():
    grid = fiji(179.95)        # 179.95..180.0
    east_half = round((179.975 - 179.95) / PX)
    notes = []
    # as GeoJSON and STAC write it (XMIN > XMAX), and with XMAX past 180
    for box in ((179.975, -16.04, -179.99, -16.01), (179.975, -16.04, 180.01, -16.01)):
        window = extent_window(grid, box, "EPSG:4326", "s1.tif", notes.append)
        assert abs(columns(window)[0] - east_half) <= 1 and columns(window)[1] == 557
    # a UTM box across 180 comes back from the transform with XMIN > XMAX: it took the
    # raster's west half, the part not asked for (the UTM box's longitudes reach a few
    # pixels further west than the corners it was made from)
    window = extent_window(grid, utm1s_box(179.975, 180.01), "EPSG:32701", "s1.tif", notes.append)
    assert east_half - 8 <= columns(window)[0] <= east_half and columns(window)[1] == 557
    assert all("reaches past the raster" in n for n in notes)


def test_a_raster_written_past_180_takes_extents_written_below_minus_180():
    grid = Grid(WGS84, Affine(PX, 0, 179.95, 0, -PX, -16.0), 1114, 557)   # 179.95..180.05
    window = extent_window(grid, (-179.99, -16.04, -179.96, -16.01), "EPSG:4326", "s1.tif")
    c0, c1 = columns(window)
    assert abs(c0 - (180.01 - 179.95) / PX) <= 1 and abs(c1 - (180.04 - 179.95) / PX) <= 1


def test_an_extent_on_the_other_side_of_the_world_is_refused():
    africa = Grid(WGS84, Affine(PX, 0, 10.0, 0, -PX, -16.0), 300, 300)
    # a canvas box over Fiji in Web Mercator: its inside-out bounds covered the whole raster
    fiji_3857 = (19981850.0, -1808197.0, 20093170.0, -1805881.0)
    with pytest.raises(InputError, match="does not overlap the raster"):
        extent_window(africa, fiji_3857, "EPSG:3857", "africa.tif")


def test_xmin_above_xmax_is_refused_in_a_projected_crs():
    grid = Grid(CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5000000), 100, 100)
    with pytest.raises(UsageError, match="XMIN < XMAX"):
        extent_window(grid, (500900, 4999100, 500100, 4999900), None, "s1.tif")


def test_a_geographic_crs_in_grads_is_refused_in_one_line(tmp_path):
    # EPSG:4807 (NTF Paris) counts grads: read as degrees, areas came out 10 % high
    path = write_raster(tmp_path / "ntf.tif", random_db((8, 8)), crs="EPSG:4807",
                        pixel=1e-4, origin=(0.1, 54.0))
    with pytest.raises(InputError, match=r"ntf.tif: its geographic CRS counts angles in grad"):
        open_inputs([path])


def test_rotation_terms_of_float_noise_are_taken_as_north_up(tmp_path):
    noisy = Affine(10.0, 1e-15, 500000.0, 1e-15, -10.0, 5000000.0)
    path = write_raster(tmp_path / "noisy.tif", random_db((8, 8)), transform=noisy)
    assert open_inputs([path]).grid.width == 8
    rotated = Affine(10.0, 0.01, 500000.0, 0.0, -10.0, 5000000.0)
    path = write_raster(tmp_path / "rotated.tif", random_db((8, 8)), transform=rotated)
    with pytest.raises(InputError, match="rotated or sheared"):
        open_inputs([path])


def test_an_extent_in_latitude_and_longitude_order_is_told_the_order():
    grid = Grid(CRS.from_epsg(32633), Affine(10, 0, 500000, 0, -10, 5000000), 100, 100)
    lon, lat = transform("EPSG:32633", WGS84, [500500], [4999500])
    swapped = (lat[0] - 0.001, lon[0] - 0.001, lat[0] + 0.001, lon[0] + 0.001)
    with pytest.raises(InputError, match="does not overlap.*in longitude and latitude is "
                                         "west,south,east,north"):
        extent_window(grid, swapped, "EPSG:4326", "s1.tif")


def test_a_raster_located_by_rpcs_only_is_told_to_orthorectify(tmp_path):
    import rasterio
    from rasterio.rpc import RPC
    unit = [1.0] + [0.0] * 19
    rpcs = RPC(height_off=0, height_scale=500, lat_off=45.0, lat_scale=0.05, long_off=12.0,
               long_scale=0.05, line_off=100, line_scale=100, samp_off=150, samp_scale=150,
               line_num_coeff=[0, 0, -1] + [0.0] * 17, line_den_coeff=unit,
               samp_num_coeff=[0, 1] + [0.0] * 18, samp_den_coeff=unit)
    path = tmp_path / "rpc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=2,
                       dtype="float32", rpcs=rpcs) as ds:
        ds.write(random_db((8, 8)))
    with pytest.raises(InputError, match="rpc.tif: is located by rational polynomial "
                                         "coefficients"):
        open_inputs([str(path)])

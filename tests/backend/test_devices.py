"""Execution providers: what ONNX Runtime says when its CUDA provider does not start."""
import os

import pytest

from backend.errors import ModelError
from backend.model import choose_providers, cuda_failure, stderr_captured

# stderr of onnxruntime-gpu 1.31.1 creating a CUDA session on a machine without the CUDA 13
# libraries (recorded on this project's CPU machine with `pip install onnxruntime-gpu`)
ORT_1_31_NO_CUDA_LIBS = (
    "\x1b[1;31m2026-11-22 07:33:56.254855193 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 "
    "operator()] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 "
    "onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : "
    "Failed to load library /venv/lib/python3.11/site-packages/onnxruntime/capi/"
    "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object "
    "file: No such file or directory\n\x1b[m\n"
    "\x1b[0;93m2026-11-22 07:33:56.254916374 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1295 "
    "CreateExecutionProviderFactoryInstance] Failed to create CUDAExecutionProvider. Require cuDNN "
    "9.* and CUDA 13.*. Please install all dependencies as mentioned in the GPU requirements page "
    "(https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements), "
    "make sure they're in the PATH, and that your GPU is supported.\x1b[m\n")


def test_native_stderr_is_captured_and_then_restored(capfd):
    log: list[str] = []
    with stderr_captured(log):
        os.write(2, b"\x1b[0;93mwritten by native code\x1b[m\n")
    os.write(2, b"after\n")
    assert log == ["written by native code\n"]
    assert capfd.readouterr().err == "after\n"


def test_cuda_failure_gives_the_missing_library_and_the_requirement():
    log: list[str] = []
    with stderr_captured(log):
        os.write(2, ORT_1_31_NO_CUDA_LIBS.encode())
    assert cuda_failure("".join(log)) == (
        "libcublasLt.so.13: cannot open shared object file: No such file or directory; "
        "this onnxruntime needs cuDNN 9.* and CUDA 13.*")
    assert cuda_failure("some other warning\n") == ""
    # the toolkit found (onnxruntime.preload_dlls), the driver missing: say that, not the toolkit
    no_driver = ORT_1_31_NO_CUDA_LIBS.replace("libcublasLt.so.13", "libcuda.so.1")
    assert cuda_failure(no_driver) == ("no NVIDIA driver: libcuda.so.1: cannot open shared object "
                                       "file: No such file or directory")


def test_provider_choice_explains_what_is_not_used():
    assert choose_providers("auto", ["CPUExecutionProvider"]).providers == ["CPUExecutionProvider"]
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", gpu).providers == gpu
    cpu = choose_providers("cpu", gpu)
    assert cpu.providers == ["CPUExecutionProvider"] and "'cpu' was asked for" in cpu.notes[0]
    with pytest.raises(ModelError, match="no CUDAExecutionProvider"):
        choose_providers("cuda", ["CPUExecutionProvider"])


# what onnxruntime 1.31.1's InferenceSession raises when its CUDA provider loads but cannot
# start (no visible device, a driver older than the CUDA runtime): the error text of
# immich-app/immich#14808, on the code path of onnxruntime_inference_collection.py
NO_DEVICE = ("/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:123 CUDA failure "
             "100: no CUDA-capable device is detected ; GPU=-1 ; hostname=h ; "
             "expr=cudaGetDeviceCount(&num_devices);")


@pytest.fixture
def cuda_that_cannot_start(monkeypatch):
    """ONNX Runtime as onnxruntime-gpu behaves on such a machine. A CUDA provider cannot
    run here, so its constructor's failure is raised where ORT's Python layer meets it:
    ORT then print()s an 'EP Error' banner on stdout and retries on the CPU."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_inference_collection as collection
    create = collection.InferenceSession._create_inference_session

    def create_or_fail(self, providers, provider_options, disabled_optimizers=None):
        if any("CUDAExecutionProvider" in str(p) for p in providers or []):
            self._fallback_providers = ["CPUExecutionProvider"]
            raise RuntimeError(NO_DEVICE)
        return create(self, providers, provider_options, disabled_optimizers)

    monkeypatch.setattr(collection.InferenceSession, "_create_inference_session", create_or_fail)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])


def test_a_cuda_provider_that_cannot_start_keeps_stdout_json_and_says_why(
        cuda_that_cannot_start, models, capfd):
    """The banner went to stdout, the JSON channel (`devices` was not JSON, `bench` failed
    on it), and the reason given was 'driver or libraries missing'."""
    from backend.model import OnnxModel, device_report
    report = device_report(models["threshold"])
    assert not report["cuda_usable"]
    assert report["reason"].endswith("(CUDA failure 100: no CUDA-capable device is detected)")
    model = OnnxModel(models["threshold"], "auto")
    assert model.provider == "CPUExecutionProvider"
    assert model.provider_notes[-1] == ("CUDA not used: ONNX Runtime could not start its CUDA "
                                        "provider (CUDA failure 100: no CUDA-capable device is "
                                        "detected)")
    with pytest.raises(ModelError, match="device 'cuda' was asked for, but ONNX Runtime could "
                                         "not start its CUDA provider \\(CUDA failure 100"):
        OnnxModel(models["threshold"], "cuda")
    assert capfd.readouterr().out == ""


def test_a_cuda_fallback_runs_the_cpus_concurrent_calls(cuda_that_cannot_start, models,
                                                        monkeypatch):
    """`--device auto` where CUDA cannot start: the session ORT fell back to had CUDA's
    settings (one call over every core), which concurrent calls beat on many cores."""
    from backend import model as model_module
    monkeypatch.setattr(model_module, "default_threads", lambda: 16)
    fell_back = model_module.OnnxModel(models["threshold"], "auto")
    cpu = model_module.OnnxModel(models["threshold"], "cpu")
    assert fell_back.provider == cpu.provider == "CPUExecutionProvider"
    assert fell_back.streams == cpu.streams == 8
    for m in (fell_back, cpu):
        assert m.session.get_session_options().intra_op_num_threads == 2

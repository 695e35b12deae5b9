# ======================================================================================================
# Hub test server (sdfp_hf/hub.py tests). KEEP THIS BLOCK FIRST in this file: `huggingface_hub` reads
# HF_ENDPOINT, HF_HOME and the token once, when it is first imported, so they are set here before
# anything (transformers included) imports it. The server runs for the whole session in a daemon thread.
# ======================================================================================================
import atexit
import os
import shutil
import sys
import tempfile

if "huggingface_hub" in sys.modules:
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT: keep the Hub test server "
        "block first in tests/conftest.py and import nothing that imports huggingface_hub above it"
    )

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hub_server import HubServer, Token

HUB_TOKENS = {
    "hf_alice_write": Token("alice", write=True),
    "hf_alice_read": Token("alice", write=False),
    "hf_bob_write": Token("bob", write=True),
}
HUB_SERVER = HubServer(HUB_TOKENS).start()
HUB_HOME = tempfile.mkdtemp(prefix="sdfp-test-hf-home-")
atexit.register(shutil.rmtree, HUB_HOME, ignore_errors=True)
atexit.register(HUB_SERVER.stop)

os.environ["HF_ENDPOINT"] = HUB_SERVER.url
os.environ["HF_HOME"] = HUB_HOME
for _name in (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
):
    os.environ.pop(_name, None)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import pytest


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """The session's loopback Hub, emptied before each test that uses it, and online mode for the test.

    Offline mode (`HF_HUB_OFFLINE`), if the session has it, is lifted for the test only: huggingface_hub
    checks it on every request, and the subprocesses the test starts inherit the environment.
    """
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    HUB_SERVER.reset()
    return HUB_SERVER


# ====================================================================================== end Hub block

# Tiny test models gain nothing from several threads, and on a shared 2-core machine torch's thread
# pool oversubscribes the CPU (measured here: up to 25x slower forwards under load).
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _profile_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A profile cache of each test's own (`from_target(model)` keeps its profiles there), so that no test
    sees another's profiles; subprocesses the test starts inherit it."""
    folder = tmp_path_factory.mktemp("profiles")
    monkeypatch.setenv("SDFP_HF_PROFILE_CACHE", str(folder))
    return folder


@pytest.fixture
def count_profiles(monkeypatch):
    """`count(**options)`: from now on, the profiles `from_target(model)` runs are recorded (the list returned,
    one entry of arguments per profile), each run with `options` on top of its own (quicker ones, say)."""
    from sdfp_hf import auto_mask

    def count(**options):
        calls = []
        real = auto_mask.profile

        def recorded(model, **kwargs):
            calls.append(kwargs)
            return real(model, **{**kwargs, **options})

        monkeypatch.setattr(auto_mask, "profile", recorded)
        return calls

    return count


@pytest.fixture
def forced_extended_drafts(monkeypatch):
    """`force(draft, extension)`: every round drafts `draft` tokens and appends up to `extension` looked-up
    ones (whatever the planner would say); returns the list that collects each round's appended count."""
    from sdfp_hf.drafting.chain import SDFPCandidateGenerator
    from sdfp_hf.drafting.planner import RoundPlanner

    def force(draft: int, extension: int) -> list[int]:
        monkeypatch.setattr(RoundPlanner, "plan", lambda self, order: ("draft", draft))
        monkeypatch.setattr(RoundPlanner, "extension_length", lambda self, order: extension)
        extended: list[int] = []
        real_extend = SDFPCandidateGenerator._extend

        def spy(self, *args):
            out = real_extend(self, *args)
            extended.append(self._extension[0])
            return out

        monkeypatch.setattr(SDFPCandidateGenerator, "_extend", spy)
        return extended

    return force


@pytest.fixture
def writes_fail_half_way(monkeypatch):
    """`fail(error)`: from now on, every file `sdfp_hf._files` writes takes half of what it is given, then
    `error` is raised (a full disk, a kill, the user's Ctrl-C)."""
    from sdfp_hf import _files

    def fail(error: BaseException) -> None:
        real_fdopen = os.fdopen

        class HalfWay:
            def __init__(self, handle):
                self.handle = handle

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

            def fileno(self):
                return self.handle.fileno()

            def write(self, data):
                self.handle.write(data[: len(data) // 2])
                self.handle.flush()
                raise error

        monkeypatch.setattr(_files.os, "fdopen", lambda fd, mode: HalfWay(real_fdopen(fd, mode)))

    return fail

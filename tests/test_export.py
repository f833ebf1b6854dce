"""coin-export (coin_lightning.export): the merged model loads with transformers alone and gives the
logits of base + adapter; the adapter export; the model card; the upload, against a local HTTP hub."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from coin_lightning.conf import CONFIG_DIR
from coin_lightning.export import export, model_card
from tests.conftest import TINY_CFG
from tests.helpers import tiny_lora_models

REPO = Path(__file__).resolve().parents[1]
METRICS = REPO / "experiments" / "robustness_study" / "results" / "jobs" / "views" / "attacked" / "coin_seed1" / "metrics.json"


def _export_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("export", overrides=["model=tiny_llama", f"output_dir={tmp_path / 'job'}", *overrides])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A tiny-LLaMA LoRA adapter with non-zero B matrices, saved by peft, in a fake training run."""
    run = tmp_path_factory.mktemp("run")
    (model, _), = tiny_lora_models([TINY_CFG])
    model.save_pretrained(str(run / "adapter"), safe_serialization=True)
    return run / "adapter"


def test_merged_model_loads_with_transformers_and_equals_base_plus_adapter(adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from coin_lightning.model.loading import load_model

    out = export(_export_cfg(tmp_path, f"adapter={adapter}", f"out={tmp_path / 'merged'}"))
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    base, tokenizer = load_model(TINY_CFG)
    reference = PeftModel.from_pretrained(base, str(adapter)).eval()
    ids = tokenizer(["Is 12 an even number? Answer yes or no.", "Name a colour."], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = reference(**ids).logits
        got = merged(**ids).logits
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with reference.disable_adapter(), torch.no_grad():
        plain = reference(**ids).logits
    assert (got - plain).abs().max() > 1e-3  # the adapter changed the model, and the merge kept the change
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers\n") and "AutoModelForCausalLM" in card


def test_adapter_export_copies_the_adapter_with_card_and_tokenizer(adapter, tmp_path):
    out = export(_export_cfg(tmp_path, f"adapter={adapter}", "merge=false", f"out={tmp_path / 'adapter_only'}"))
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (out / name).read_bytes() == (adapter / name).read_bytes()
    assert (out / "tokenizer.json").is_file() and not (out / "model.safetensors").exists()
    assert "library_name: peft" in (out / "README.md").read_text(encoding="utf-8")


def test_card_gives_base_model_settings_and_the_robustness_table(tmp_path):
    from coin_lightning.eval.reports.tables import results_markdown

    metrics = json.loads(METRICS.read_text(encoding="utf-8"))
    config = {"seed": 7, "loss": {"lambda": 1000.0, "temperature": 0.05, "pooling": "last"},
              "data": {"source": "glue", "root": "../shared/data/glue"}}
    model = {"name_or_path": "HuggingFaceTB/SmolLM2-360M-Instruct", "revision": "abc123",
             "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}}
    card = model_card({"config": config, "summary": {"global_step": 120}, "metrics": metrics}, model, True, "me/model")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-360M-Instruct" and meta["library_name"] == "transformers"
    assert "at revision `abc123`" in card
    for row in ("| lambda (weight of the contrastive loss) | 1000.0 |", "| InfoNCE temperature | 0.05 |",
                "| pooling | last |", "| data | glue (../shared/data/glue) |", "| optimizer steps | 120 |",
                "| seed | 7 |", "| LoRA rank / alpha / target modules | 8 / 16 / q_proj, v_proj |"):
        assert row in card
    table = results_markdown(metrics).split("\n", 1)[1].strip()  # without its title line
    assert table in card and "## Robustness to instructions" in card

    embedded = model_card({"config": None, "summary": None, "metrics": None}, {"name_or_path": "embedded:smollm2-135m"},
                          False, "x")
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in embedded and "Q4_1" in embedded
    assert "Robustness" not in embedded and "training settings are unknown" in embedded


def test_bad_export_settings_fail_before_loading(adapter, tmp_path):
    from coin_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="push_to_hub=true needs repo_id"):
        export(_export_cfg(tmp_path, f"adapter={adapter}", "push_to_hub=true"))
    with pytest.raises(ConfigError, match=r"adapter=.*no adapter_config\.json"):
        export(_export_cfg(tmp_path, f"adapter={tmp_path}"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="out=.*not empty"):
        export(_export_cfg(tmp_path, f"adapter={adapter}", f"out={tmp_path / 'full'}"))


class _Hub(BaseHTTPRequestHandler):
    """The hub's HTTP API as far as create_repo + upload_folder (regular, non-LFS files) use it."""

    calls: list[tuple[str, str]] = []
    files: dict[str, bytes] = {}

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append(("POST", self.path))
        host = f"http://{self.headers['Host']}"
        if self.path == "/api/repos/create":
            req = json.loads(body)
            self._reply({"url": f"{host}/{req.get('organization')}/{req['name']}", "name": req["name"]})
        elif self.path == "/api/validate-yaml":
            self._reply({})
        elif "/preupload/" in self.path:
            paths = [f["path"] for f in json.loads(body)["files"]]
            self._reply({"files": [{"path": p, "uploadMode": "regular", "shouldIgnore": False, "oid": None} for p in paths]})
        elif "/commit/" in self.path:
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            repo = self.path.split("/api/models/", 1)[1].split("/commit/", 1)[0]
            self._reply({"commitUrl": f"{host}/{repo}/commit/{'0' * 40}", "commitOid": "0" * 40})
        else:
            self._reply({"error": "not found"}, 404)

    def log_message(self, *args) -> None:  # quiet
        pass


def test_push_to_hub_uploads_the_export_over_http(adapter, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
               "HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        out = subprocess.run(
            [sys.executable, "-m", "coin_lightning.export", f"adapter={adapter}", "merge=false", "model=tiny_llama",
             f"out={tmp_path / 'up'}", "push_to_hub=true", "repo_id=me/coin-tiny", f"hydra.run.dir={tmp_path / 'job'}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("POST", "/api/repos/create") in _Hub.calls
    assert any(path.startswith("/api/models/me/coin-tiny/commit/") for _, path in _Hub.calls)
    local = {p.name: p.read_bytes() for p in (tmp_path / "up").iterdir()}
    assert _Hub.files == local and "README.md" in local and "adapter_model.safetensors" in local

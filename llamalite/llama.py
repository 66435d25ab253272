"""Llama: llama-cpp-python's high-level API over llamalite's model, tokenizer
and sampler, so code written for `llama_cpp.Llama` runs by changing the import.

    from llamalite import Llama
    llm = Llama("smollm2-135m-instruct", n_ctx=2048, verbose=False)
    print(llm("The capital of France is", max_tokens=8, temperature=0)["choices"][0]["text"])

Names, parameters, defaults and the returned dicts are llama-cpp-python
0.3.36's. Generation is small named steps: `_prefill` evaluates what the KV
cache does not hold yet of the prompt, `_sample` picks a token from the last
logits, `_decode_one` evaluates it; `generate` strings them into a generator
of token ids. A completion is a stream of text pieces (`_CompletionRun.pieces`,
which holds back whatever could begin a stop string): streaming wraps each
piece in a chunk, a non-streaming completion joins them.

Where llamalite departs from llama-cpp-python on purpose, the docstrings say
so (echo with logprobs scores each token by the logits before it; seed -1
means a fresh random seed per call; logprobs work without logits_all).
"""
from __future__ import annotations

import fnmatch
import json
import os
import random
import sys
import time
import uuid
import warnings
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import chat, models
from . import tools as tools_
from ._native import trim_heap
from .errors import (ContextOverflowError, InvalidArgumentError, LlamaliteError,
                     UnsupportedModelError)
from .gguf import GGUFReader, GGUFValueType
from .grammar import as_grammar, response_format_grammar
from .grammar_match import GrammarState, VocabIndex
from .model import Model, WeightsReader
from .sampling import (LLAMA_DEFAULT_SEED, LogitsProcessorList, Sampler, SamplingParams,
                       StoppingCriteriaList, logits_to_logprobs, top_logprobs)
from .tokenizer import NO_TOKEN, Tokenizer

# llama.cpp's enum llama_pooling_type
LLAMA_POOLING_TYPE_UNSPECIFIED = -1
LLAMA_POOLING_TYPE_NONE = 0
LLAMA_POOLING_TYPE_MEAN = 1
LLAMA_POOLING_TYPE_CLS = 2
LLAMA_POOLING_TYPE_LAST = 3
LLAMA_POOLING_TYPE_RANK = 4

# ggml type ids llama-cpp-python's type_k / type_v take, for the KV cache types we keep
_KV_TYPE_IDS = {0: "F32", 1: "F16"}

# Texts of fill-in-the-middle tokens (prefix, suffix, middle), for models whose
# metadata does not name them.
_FIM_TEXTS = (("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
              ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
              ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
              ("<PRE>", "<SUF>", "<MID>"))


class LlamaState:
    """What save_state() keeps: the evaluated tokens, their logits (with
    logits_all), and the KV cache of those positions, as llama-cpp-python's."""

    def __init__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single],
                 n_tokens: int, llama_state: bytes, llama_state_size: int, seed: int):
        self.input_ids = input_ids
        self.scores = scores
        self.n_tokens = n_tokens
        self.llama_state = llama_state
        self.llama_state_size = llama_state_size
        self.seed = seed


@dataclass
class _Timings:
    """Where a completion's time went, for verbose output."""
    prompt_s: float = 0.0
    prompt_tokens: int = 0
    eval_s: float = 0.0
    eval_tokens: int = 0
    sample_s: float = 0.0
    samples: int = 0

    def __iadd__(self, other: "_Timings") -> "_Timings":
        """Accumulate another call's timings (a session over many calls)."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


class Llama:
    """A GGUF model with llama-cpp-python's API: completions, chat, embeddings,
    tokenization and the low-level eval/sample/generate loop."""

    def __init__(
        self,
        model_path: str,
        *,
        n_gpu_layers: int = 0,
        split_mode: int = 1,
        main_gpu: int = 0,
        tensor_split: Optional[List[float]] = None,
        vocab_only: bool = False,
        use_mmap: bool = False,
        use_mlock: bool = False,
        kv_overrides: Optional[Dict[str, Union[bool, int, float, str]]] = None,
        seed: int = LLAMA_DEFAULT_SEED,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: Optional[int] = None,
        n_threads_batch: Optional[int] = None,
        rope_scaling_type: Optional[int] = -1,
        pooling_type: int = LLAMA_POOLING_TYPE_UNSPECIFIED,
        attention_type: int = -1,
        rope_freq_base: float = 0.0,
        rope_freq_scale: float = 0.0,
        yarn_ext_factor: float = -1.0,
        yarn_attn_factor: float = 1.0,
        yarn_beta_fast: float = 32.0,
        yarn_beta_slow: float = 1.0,
        yarn_orig_ctx: int = 0,
        logits_all: bool = False,
        embedding: bool = False,
        offload_kqv: bool = True,
        flash_attn: bool = False,
        op_offload: Optional[bool] = None,
        swa_full: Optional[bool] = None,
        no_perf: bool = False,
        last_n_tokens_size: int = 64,
        lora_base: Optional[str] = None,
        lora_scale: float = 1.0,
        lora_path: Optional[str] = None,
        numa: Union[bool, int] = False,
        chat_format: Optional[str] = None,
        chat_handler: Optional[Any] = None,
        draft_model: Optional[Any] = None,
        tokenizer: Optional[Any] = None,
        type_k: Optional[int] = None,
        type_v: Optional[int] = None,
        spm_infill: bool = False,
        verbose: bool = True,
        **kwargs: Any,
    ):
        """Load a GGUF model from `model_path`: a file, or a catalogue name
        such as "smollm2-135m-instruct" (fetched on first use).

        Parameters are llama-cpp-python's. These are accepted and have no
        effect, since they steer GPUs, memory locking or llama.cpp's internal
        scheduling: n_gpu_layers, split_mode, main_gpu, tensor_split,
        use_mlock, n_ubatch, offload_kqv, flash_attn, op_offload, swa_full
        (the cache always keeps every position), numa, no_perf, n_threads_batch (one pool of n_threads
        evaluates prompts and tokens). Settings llamalite cannot honour
        (kv_overrides, rope and YaRN overrides, LoRA, a draft model, a
        tokenizer override, non-causal attention, KV types other than F16/F32)
        raise UnsupportedModelError when given. Unknown keywords are ignored
        with a warning, as llama-cpp-python ignores them.

        use_mmap defaults to False here (llama-cpp-python: True): the weights
        are read into huge-page memory at load, which generates about a third
        faster than streaming them through the file mapping's 4 KiB pages;
        use_mmap=True uses the mapping (pages loaded lazily and shared between
        processes), except for the matrices packed for the prompt kernels,
        which are copied out of it as llama.cpp's repacked ones are. n_ctx 0 means the model's training context; n_threads None the
        physical cores; seed -1 (or LLAMA_DEFAULT_SEED) a random seed.
        embedding=True enables embed()/create_embedding(); logits_all=True
        keeps every evaluated token's logits in `scores`.
        """
        self.verbose = verbose
        self._model: Optional[Model] = None
        self._reader: Optional[GGUFReader] = None
        if kwargs:
            warnings.warn(f"Llama: ignoring unknown keyword arguments {sorted(kwargs)}",
                          RuntimeWarning, stacklevel=2)
        _refuse_unsupported(kv_overrides=kv_overrides, rope_freq_base=rope_freq_base,
                            rope_freq_scale=rope_freq_scale, rope_scaling_type=rope_scaling_type,
                            attention_type=attention_type, yarn_ext_factor=yarn_ext_factor,
                            yarn_attn_factor=yarn_attn_factor, yarn_beta_fast=yarn_beta_fast,
                            yarn_beta_slow=yarn_beta_slow, yarn_orig_ctx=yarn_orig_ctx,
                            lora_base=lora_base, lora_path=lora_path, draft_model=draft_model,
                            tokenizer=tokenizer)
        kv_type = _kv_type(type_k, type_v)
        if pooling_type not in (-1, 0, 1, 2, 3, 4):
            raise ValueError(f"pooling_type {pooling_type}: expected -1 (unspecified), "
                             "0 (none), 1 (mean), 2 (cls), 3 (last) or 4 (rank)")

        started = time.perf_counter()
        self._model_name = os.fspath(model_path)
        if not Path(model_path).is_file() and self._model_name not in models.CATALOG:
            raise InvalidArgumentError(f"Model path does not exist: {self._model_name} (nor is "
                                       f"it a catalogue model: {', '.join(models.CATALOG)})")
        path = models.resolve(model_path)
        self.model_path = str(path)
        # the weights are read while the file is parsed and the tokenizer built
        weights = WeightsReader(path) if not vocab_only and not use_mmap else None
        try:
            self._reader = reader = GGUFReader(path)
        except BaseException:
            if weights is not None:
                weights.cancel()
            raise
        try:
            self.metadata: Dict[str, str] = _metadata_strings(reader)
            self._tokenizer = Tokenizer.from_metadata(reader.metadata)
            trim_heap()   # before the weights fill memory: a lower peak
            self._arch = str(reader.metadata.get("general.architecture", ""))
            self._n_ctx_train = int(reader.metadata.get(f"{self._arch}.context_length", 0) or 0)
            n_ctx = int(n_ctx) if n_ctx else self._n_ctx_train
            if n_ctx < 1:
                raise ValueError(f"n_ctx {n_ctx}: the model states no context length, so "
                                 "give n_ctx > 0")
            if not vocab_only:
                self._model = Model(reader, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads,
                                    kv_type=kv_type, use_mmap=use_mmap, weights=weights)
        except BaseException:
            if weights is not None:
                weights.cancel()   # no read left filling memory behind a failed load
            self.close()
            raise
        self._n_ctx = n_ctx
        self.n_batch = min(n_ctx, int(n_batch))
        self.n_threads = self._model.n_threads if self._model else n_threads
        self.n_threads_batch = self.n_threads
        self._vocab_only = vocab_only
        self._logits_all = bool(logits_all)
        self._embedding = bool(embedding)
        self._pooling_type = self._resolve_pooling(pooling_type)
        self.last_n_tokens_size = last_n_tokens_size
        self._seed = LLAMA_DEFAULT_SEED if seed in (None, -1) else seed
        self._n_vocab = self._tokenizer.n_vocab
        self.chat_format = chat_format or chat.guess_chat_format(self.metadata)
        self.chat_handler = chat_handler
        self._chat_formatters: Dict[str, Any] = {}
        self._vocab_index: Optional[VocabIndex] = None
        self.draft_model = None
        self.cache = None

        # The evaluated tokens (n_tokens of them, all in the KV cache) and,
        # with logits_all, each one's logits in `scores` (without, `scores` is
        # empty and only the last token's logits are kept).
        self.n_tokens = 0
        self.input_ids: npt.NDArray[np.intc] = np.zeros(n_ctx, dtype=np.intc)
        self.scores: npt.NDArray[np.single] = np.zeros(
            (n_ctx if self._logits_all else 0, self._n_vocab), dtype=np.single)
        self._logits: Optional[np.ndarray] = None   # the last evaluated token's logits
        self._requires_eval = True
        self._timings = _Timings()
        self.tokenizer_ = LlamaTokenizer(self)
        if verbose:
            self._print_load_info(time.perf_counter() - started)

    # -- construction helpers ------------------------------------------------

    @classmethod
    def from_catalog(cls, name: str = models.DEFAULT_MODEL, **kwargs: Any) -> "Llama":
        """A catalogue model (see llamalite.models.CATALOG), fetched and
        cached on first use; keyword arguments go to Llama()."""
        return cls(str(models.fetch(name)), **kwargs)

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: Optional[str],
                        additional_files: Optional[List[str]] = None,
                        local_dir: Optional[Union[str, os.PathLike]] = None,
                        local_dir_use_symlinks: Any = "auto",
                        cache_dir: Optional[Union[str, os.PathLike]] = None,
                        **kwargs: Any) -> "Llama":
        """Download `filename` (a name or a glob such as "*Q4_K_M.gguf", which
        must match exactly one file) from the Hugging Face repository
        `repo_id`, with any `additional_files` (also globs), and load it.
        Needs the huggingface-hub package; keyword arguments go to Llama()."""
        try:
            from huggingface_hub import HfFileSystem, hf_hub_download
        except ImportError:
            raise ImportError("Llama.from_pretrained requires the huggingface-hub package: "
                              "pip install huggingface-hub") from None
        try:
            listed = HfFileSystem().ls(repo_id, recursive=True)
        except Exception as e:  # offline, unknown repository, no access: say which
            raise LlamaliteError(f"could not list the files of {repo_id} on the Hugging Face "
                                 f"hub (offline?): {type(e).__name__}: {e}") from None
        files = [str(Path(f["name"] if isinstance(f, dict) else f).relative_to(repo_id))
                 for f in listed]

        def download(pattern: str, **extra: Any) -> str:
            match = _only_match(repo_id, pattern, files)
            subfolder = str(Path(match).parent)
            try:
                return hf_hub_download(repo_id=repo_id, filename=Path(match).name,
                                       subfolder=None if subfolder == "." else subfolder,
                                       local_dir=local_dir, cache_dir=cache_dir, **extra)
            except Exception as e:
                raise LlamaliteError(f"could not download {match} from {repo_id}: "
                                     f"{type(e).__name__}: {e}") from None

        if filename is None:
            raise ValueError("from_pretrained needs a filename (or a glob) within the repository")
        model_path = download(filename)
        for extra_file in additional_files or ():
            download(extra_file)
        return cls(model_path=model_path, **kwargs)

    def _resolve_pooling(self, pooling_type: int) -> int:
        if pooling_type != LLAMA_POOLING_TYPE_UNSPECIFIED:
            return pooling_type
        # the model's <arch>.pooling_type, else none: llama.cpp's choice for
        # a model that states none (decoder-only LMs): one vector per token
        stated = self._reader.metadata.get(f"{self._arch}.pooling_type") if self._reader else None
        return int(stated) if isinstance(stated, int) and 0 <= stated <= 4 else 0

    def _print_load_info(self, seconds: float) -> None:
        md, size = self._reader.metadata, os.path.getsize(self.model_path)
        print(f"llamalite: loaded {Path(self.model_path).name} ({size / 2**20:.1f} MiB, "
              f"{len(md)} metadata keys, {len(self._reader.tensors)} tensors) in "
              f"{seconds * 1000:.0f} ms", file=sys.stderr)
        if self._model is None:
            print(f"llamalite: vocab only: {self._tokenizer.kind} tokenizer, "
                  f"n_vocab = {self._n_vocab}", file=sys.stderr)
            return
        cfg, m = self._model.config, self._model
        print(f"llamalite: arch = {cfg.arch.name}, n_layer = {cfg.n_layer}, n_embd = "
              f"{cfg.n_embd}, n_head = {cfg.n_head}/{cfg.n_head_kv}, n_vocab = {cfg.n_vocab}, "
              f"n_ctx_train = {cfg.n_ctx_train}", file=sys.stderr)
        from ._native import get_isa
        print(f"llamalite: n_ctx = {m.n_ctx}, n_batch = {m.n_batch}, n_threads = "
              f"{m.n_threads}, KV cache {m.kv_type} {m.kv_bytes() / 2**20:.1f} MiB, "
              f"kernels {get_isa()}", file=sys.stderr)

    # -- sizes and special tokens --------------------------------------------

    def n_ctx(self) -> int:
        """The context window, in tokens."""
        return self._n_ctx

    def n_embd(self) -> int:
        """The size of the model's hidden state (and of its embeddings)."""
        if self._model is not None:
            return self._model.config.n_embd
        return int(self._reader.metadata.get(f"{self._arch}.embedding_length", 0))

    def n_vocab(self) -> int:
        return self._n_vocab

    def token_bos(self) -> int:
        """The beginning-of-sequence token (-1 if the vocabulary has none)."""
        return self._tokenizer.bos_id

    def token_eos(self) -> int:
        """The end-of-sequence token (-1 if the vocabulary has none)."""
        return self._tokenizer.eos_id

    def token_nl(self) -> int:
        """The token of a lone newline."""
        ids = self._tokenizer.encode("\n", add_bos=False)
        return ids[-1] if ids else NO_TOKEN

    def pooling_type(self) -> int:
        """How embed() pools token vectors (LLAMA_POOLING_TYPE_*)."""
        return self._pooling_type

    def tokenizer(self) -> "LlamaTokenizer":
        return LlamaTokenizer(self)

    def set_seed(self, seed: int) -> None:
        self._seed = seed

    # -- tokens <-> text -----------------------------------------------------

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> List[int]:
        """Token ids of UTF-8 `text`; add_bos adds BOS (and EOS) where the
        model asks for them; special parses control-token text."""
        return self._tokenizer.encode(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Optional[Sequence[int]] = None,
                   special: bool = False) -> bytes:
        """The bytes of `tokens`. As llama.cpp's: a leading space is dropped
        when the first token is BOS; prev_tokens is accepted and unused."""
        tokens = list(tokens)
        out = self._tokenizer.decode(tokens, special=special)
        if tokens and tokens[0] == self.token_bos() and out[:1] == b" ":
            return out[1:]
        return out

    # -- the evaluation state ------------------------------------------------

    @property
    def _input_ids(self) -> npt.NDArray[np.intc]:
        return self.input_ids[:self.n_tokens]

    @property
    def _scores(self) -> npt.NDArray[np.single]:
        """Every evaluated token's logits with logits_all; else the last one's."""
        if self._logits_all:
            return self.scores[:self.n_tokens]
        return self._logits[None] if self._logits is not None else self.scores[:0]

    def _live_model(self) -> Model:
        if self._model is None:
            if self._vocab_only:
                raise RuntimeError("this Llama was loaded with vocab_only=True: it can tokenize, "
                                   "but has no weights to evaluate")
            raise ValueError("the model is closed")
        return self._model

    def reset(self) -> None:
        """Forget the evaluated tokens (the next eval starts at position 0)."""
        self.n_tokens = 0
        self._requires_eval = True
        if self._model is not None:
            self._model.truncate(0)

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate `tokens` after the n_tokens already evaluated (whatever the
        KV cache held from there on is replaced)."""
        self._eval(tokens, self._logits_all)

    def _eval(self, tokens: Sequence[int], all_logits: bool) -> Optional[np.ndarray]:
        """eval(), returning the logits of every token (all_logits) or the last."""
        model = self._live_model()
        tokens = np.asarray(tokens, dtype=np.intc)
        n = len(tokens)
        if n == 0:
            return None
        start = self.n_tokens
        if start + n > self._n_ctx:
            raise ContextOverflowError(f"Requested tokens ({start + n}) exceed context window "
                                       f"of {self._n_ctx}")
        logits = model.eval(tokens, pos=start, all_logits=all_logits)
        self.input_ids[start:start + n] = tokens
        if self._logits_all:
            self.scores[start:start + n] = logits
        self._logits = logits[-1] if all_logits else logits
        self.n_tokens = start + n
        self._requires_eval = False
        return logits

    def _timed_eval(self, tokens: Sequence[int], prompt: bool,
                    all_logits: bool = False) -> Optional[np.ndarray]:
        started = time.perf_counter()
        logits = self._eval(tokens, all_logits or self._logits_all)
        spent, t = time.perf_counter() - started, self._timings
        if prompt:
            t.prompt_s, t.prompt_tokens = t.prompt_s + spent, t.prompt_tokens + len(tokens)
        else:
            t.eval_s, t.eval_tokens = t.eval_s + spent, t.eval_tokens + len(tokens)
        return logits

    def save_state(self) -> LlamaState:
        """The evaluated tokens, their logits and their KV cache."""
        data = self._live_model().save_cache(self.n_tokens)
        return LlamaState(input_ids=self.input_ids.copy(), scores=self._scores.copy(),
                          n_tokens=self.n_tokens, llama_state=data,
                          llama_state_size=len(data), seed=self._seed)

    def load_state(self, state: LlamaState) -> None:
        """Restore what save_state() kept (from this model with the same n_ctx)."""
        model = self._live_model()
        if len(state.llama_state) != state.llama_state_size:
            raise ValueError(f"the state holds {len(state.llama_state)} bytes but says "
                             f"{state.llama_state_size}")
        model.load_cache(state.llama_state, state.n_tokens)
        self.input_ids[:state.n_tokens] = state.input_ids[:state.n_tokens]
        self.n_tokens = state.n_tokens
        if self._logits_all:
            self.scores[:state.n_tokens] = state.scores[:state.n_tokens]
        self._logits = None
        self._requires_eval = True
        self._seed = state.seed

    # -- sampling and generation ---------------------------------------------

    def _sampler(self, temp: float, top_k: int, top_p: float, min_p: float, typical_p: float,
                 repeat_penalty: float, frequency_penalty: float, presence_penalty: float,
                 mirostat_mode: int, mirostat_tau: float, mirostat_eta: float,
                 logits_processor: Optional[LogitsProcessorList],
                 logit_bias: Optional[Dict[int, float]] = None,
                 grammar: Optional[Any] = None) -> Sampler:
        params = SamplingParams(
            temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, last_n_tokens=self.last_n_tokens_size,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
            logit_bias=logit_bias, seed=_sampler_seed(self._seed))
        return Sampler(self._n_vocab, params, logits_processor=logits_processor,
                       grammar=None if grammar is None else self._grammar_state(grammar))

    def _grammar_state(self, grammar: Any) -> GrammarState:
        """A generation's fresh place in `grammar` (a LlamaGrammar or GBNF
        text) over this model's vocabulary (indexed once, on first use)."""
        if self._vocab_index is None:
            tok = self._tokenizer
            self._vocab_index = VocabIndex([tok.token_to_piece(i) for i in range(tok.n_vocab)],
                                           tok.eog_ids)
        return as_grammar(grammar).state(self._vocab_index)

    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
               typical_p: float = 1.0, temp: float = 0.80, repeat_penalty: float = 1.0,
               frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
               tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_eta: float = 0.1,
               mirostat_tau: float = 5.0, penalize_nl: bool = True,
               logits_processor: Optional[LogitsProcessorList] = None,
               grammar: Optional[Any] = None, idx: Optional[int] = None) -> int:
        """One token from the last evaluated token's logits, with a fresh
        sampler (no penalty history). tfs_z and penalize_nl are accepted and
        unused, as in llama-cpp-python; idx must be None or the last position.
        A grammar constrains the token as the first of a sentence."""
        if self.n_tokens == 0 or self._logits is None:
            raise ValueError("nothing evaluated to sample from: call eval() first")
        if idx is not None and idx != self.n_tokens - 1:
            raise ValueError(f"idx {idx}: only the last evaluated position "
                             f"({self.n_tokens - 1}) has logits to sample from")
        sampler = self._sampler(temp, top_k, top_p, min_p, typical_p, repeat_penalty,
                                frequency_penalty, presence_penalty, mirostat_mode,
                                mirostat_tau, mirostat_eta, logits_processor, grammar=grammar)
        return sampler.sample(self._logits, self._input_ids)

    def generate(self, tokens: Sequence[int], top_k: int = 40, top_p: float = 0.95,
                 min_p: float = 0.05, typical_p: float = 1.0, temp: float = 0.80,
                 repeat_penalty: float = 1.0, reset: bool = True,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 tfs_z: float = 1.0, mirostat_mode: int = 0, mirostat_tau: float = 5.0,
                 mirostat_eta: float = 0.1, penalize_nl: bool = True,
                 logits_processor: Optional[LogitsProcessorList] = None,
                 stopping_criteria: Optional[StoppingCriteriaList] = None,
                 grammar: Optional[Any] = None,
                 logit_bias: Optional[Dict[int, float]] = None) -> Iterator[int]:
        """Evaluate the prompt `tokens` and yield sampled token ids forever
        (the caller stops). Each yielded token is evaluated when the next one
        is asked for; `send(ids)` appends ids after it. With reset, the longest
        prefix the KV cache already holds is kept and only the rest evaluated.
        The penalties look at the tokens generated by this call, as in
        llama-cpp-python. logit_bias is an extension. A grammar (LlamaGrammar
        or GBNF text) allows only tokens that continue it, and end-of-generation
        tokens only where it can end."""
        self._live_model()
        sampler = self._sampler(temp, top_k, top_p, min_p, typical_p, repeat_penalty,
                                frequency_penalty, presence_penalty, mirostat_mode,
                                mirostat_tau, mirostat_eta, logits_processor, logit_bias,
                                grammar)
        self._prefill(list(tokens), reset)
        while True:
            token = self._sample(sampler)
            if stopping_criteria is not None and stopping_criteria(self._input_ids, self._logits):
                return
            more = yield token
            self._decode_one([token, *(more or ())])

    def _prefill(self, tokens: List[int], reset: bool) -> None:
        """Evaluate the prompt `tokens`, or what of it the KV cache lacks."""
        pending = self._prefill_plan(tokens, reset)
        if pending:
            self._timed_eval(pending, prompt=True)
        elif self._logits is None:
            raise ValueError("no prompt tokens to evaluate and nothing evaluated before")

    def _prefill_plan(self, tokens: List[int], reset: bool) -> List[int]:
        """Which of the prompt `tokens` still need evaluating. With reset, keep
        the longest prefix the KV cache holds, but re-evaluate at least the
        last prompt token when its logits are not at hand."""
        if not reset:
            return tokens
        common = self.longest_token_prefix(self._input_ids, tokens)
        if common == len(tokens) == self.n_tokens and not self._requires_eval:
            return []
        keep = common - 1 if common == len(tokens) else common
        if keep <= 0:
            self.reset()
            return tokens
        if self.verbose:
            print(f"Llama.generate: {keep} prefix-match hit, remaining {len(tokens) - keep} "
                  "prompt tokens to eval", file=sys.stderr)
        self.n_tokens = keep
        self._live_model().truncate(keep)
        self._requires_eval = True
        return tokens[keep:]

    def _sample(self, sampler: Sampler) -> int:
        started = time.perf_counter()
        token = sampler.sample(self._logits, self._input_ids)
        sampler.accept(token)
        self._timings.sample_s += time.perf_counter() - started
        self._timings.samples += 1
        return token

    def _decode_one(self, tokens: List[int]) -> None:
        self._timed_eval(tokens, prompt=False)

    # -- completions ---------------------------------------------------------

    def create_completion(
        self,
        prompt: Union[str, List[int]],
        suffix: Optional[str] = None,
        max_tokens: Optional[int] = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        logprobs: Optional[int] = None,
        echo: bool = False,
        stop: Optional[Union[str, List[str]]] = [],
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: Optional[int] = None,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: Optional[str] = None,
        stopping_criteria: Optional[StoppingCriteriaList] = None,
        logits_processor: Optional[LogitsProcessorList] = None,
        grammar: Optional[Any] = None,
        logit_bias: Optional[Dict[int, float]] = None,
    ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """Continue `prompt` (text, or token ids); an OpenAI `text_completion`
        dict, or with stream=True an iterator of its chunks.

        Generation ends at an end-of-generation token or a `stop` string
        (finish_reason "stop"; the stop string is not part of the text, and a
        stream never shows any part of it) or after max_tokens tokens
        ("length"; None or <= 0: up to the context). A prompt that fills the
        context, or a prompt plus max_tokens beyond it, raises
        ContextOverflowError naming the numbers (llama-cpp-python silently
        cuts max_tokens instead: a completion shorter than asked for, with no
        word of why, is the surprise we avoid). A prompt sharing a prefix with what was
        evaluated before re-evaluates only the rest.

        logprobs=n adds each token's log-probability and the n best
        alternatives (llama-cpp-python's shape); unlike llama-cpp-python this
        works without logits_all, and with echo each prompt token is scored by
        the logits of the position before it (llama-cpp-python is one off).
        suffix: fill-in-the-middle, for models whose vocabulary has FIM
        tokens (the tokenizer.ggml.fim_* keys, or Qwen2.5-Coder's
        <|fim_prefix|>-style texts): the prompt is the code before the cursor,
        the suffix the code after it, and the completion the code between
        (UnsupportedModelError for a model without FIM tokens, where
        llama-cpp-python would silently append the suffix). tfs_z is accepted
        and unused, as in llama-cpp-python.
        """
        run = _CompletionRun(self, prompt=prompt, suffix=suffix, max_tokens=max_tokens,
                             logprobs=logprobs, echo=echo, stop=stop, seed=seed, model=model,
                             stopping_criteria=stopping_criteria,
                             sampling=dict(grammar=grammar, temp=temperature, top_k=top_k,
                                           top_p=top_p, min_p=min_p, typical_p=typical_p,
                                           repeat_penalty=repeat_penalty,
                                           frequency_penalty=frequency_penalty,
                                           presence_penalty=presence_penalty,
                                           mirostat_mode=mirostat_mode,
                                           mirostat_tau=mirostat_tau,
                                           mirostat_eta=mirostat_eta,
                                           logits_processor=logits_processor,
                                           logit_bias=logit_bias))
        if stream:
            return run.chunks()
        return run.join()

    def __call__(self, prompt: Union[str, List[int]], suffix: Optional[str] = None,
                 max_tokens: Optional[int] = 16, temperature: float = 0.8, top_p: float = 0.95,
                 min_p: float = 0.05, typical_p: float = 1.0, logprobs: Optional[int] = None,
                 echo: bool = False, stop: Optional[Union[str, List[str]]] = [],
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                 repeat_penalty: float = 1.0, top_k: int = 40, stream: bool = False,
                 seed: Optional[int] = None, tfs_z: float = 1.0, mirostat_mode: int = 0,
                 mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                 model: Optional[str] = None,
                 stopping_criteria: Optional[StoppingCriteriaList] = None,
                 logits_processor: Optional[LogitsProcessorList] = None,
                 grammar: Optional[Any] = None,
                 logit_bias: Optional[Dict[int, float]] = None):
        """create_completion()."""
        return self.create_completion(
            prompt, suffix=suffix, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
            min_p=min_p, typical_p=typical_p, logprobs=logprobs, echo=echo, stop=stop,
            frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            repeat_penalty=repeat_penalty, top_k=top_k, stream=stream, seed=seed, tfs_z=tfs_z,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
            model=model, stopping_criteria=stopping_criteria, logits_processor=logits_processor,
            grammar=grammar, logit_bias=logit_bias)

    def _print_timings(self) -> None:
        t = self._timings

        def rate(seconds: float, n: int) -> str:
            per = seconds * 1000 / n if n else 0.0
            return (f"{n} tokens in {seconds * 1000:.1f} ms ({per:.2f} ms/token, "
                    f"{n / seconds if seconds else 0.0:.1f} tokens/s)")

        print(f"llamalite: prompt eval {rate(t.prompt_s, t.prompt_tokens)}; "
              f"eval {rate(t.eval_s, t.eval_tokens)}; sampling {t.samples} tokens in "
              f"{t.sample_s * 1000:.1f} ms", file=sys.stderr)

    # -- chat ----------------------------------------------------------------

    def create_chat_completion(
        self,
        messages: List[Dict[str, Any]],
        functions: Optional[List[Dict[str, Any]]] = None,
        function_call: Optional[Any] = None,
        tools: Optional[List[Dict[str, Any]]] = None,
        tool_choice: Optional[Any] = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        stream: bool = False,
        stop: Optional[Union[str, List[str]]] = [],
        seed: Optional[int] = None,
        response_format: Optional[Dict[str, Any]] = None,
        max_tokens: Optional[int] = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: Optional[str] = None,
        logits_processor: Optional[LogitsProcessorList] = None,
        grammar: Optional[Any] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        logprobs: Optional[bool] = None,
        top_logprobs: Optional[int] = None,
    ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """Answer a conversation (OpenAI-shaped `messages`): a `chat.completion`
        dict, or with stream=True `chat.completion.chunk`s (a role delta, then
        content deltas). The prompt is the model's own chat template (or
        `chat_format`, or the `chat_handler` given to Llama), rendered in a
        sandbox; the format's stop strings join `stop`; max_tokens None means
        up to the context.

        grammar constrains the reply (see create_completion);
        response_format {"type": "json_object"} (optionally with "schema")
        or {"type": "json_schema", "json_schema": {"schema": ...}} makes it
        JSON (valid under the schema). tools and tool_choice ("auto",
        "none", "required" or a named function; the legacy functions and
        function_call too) offer function calls, as llamalite.tools
        describes: a reply that calls comes back as `tool_calls` with
        finish_reason "tool_calls" (streamed as tool_calls deltas), and a
        forced call's arguments are generated under its parameter schema."""
        if self.chat_handler is not None:
            return self.chat_handler(
                llama=self, messages=messages, functions=functions,
                function_call=function_call, tools=tools, tool_choice=tool_choice,
                temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                typical_p=typical_p, logprobs=logprobs, top_logprobs=top_logprobs,
                stream=stream, stop=stop, seed=seed, response_format=response_format,
                max_tokens=max_tokens, presence_penalty=presence_penalty,
                frequency_penalty=frequency_penalty, repeat_penalty=repeat_penalty,
                tfs_z=tfs_z, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
                mirostat_eta=mirostat_eta, model=model, logits_processor=logits_processor,
                grammar=grammar, logit_bias=logit_bias)
        tool_plan = tools_.plan(tools, tool_choice, functions, function_call)
        grammar = self._chat_grammar(grammar, response_format, tool_plan)
        formatter = self._chat_formatter()
        native = tools_.template_knows_tools(getattr(formatter, "template", None))
        formatted = formatter(tools_.prepared_messages(messages, tool_plan, native),
                              tools=tool_plan.tools if tool_plan.offered and native else None,
                              tool_choice=tool_choice if tool_plan.offered else None)
        prompt = self.tokenize(formatted.prompt.encode("utf-8"),
                               add_bos=not formatted.added_special, special=True)
        stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
        completion = self.create_completion(
            prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p, min_p=min_p,
            typical_p=typical_p, logprobs=top_logprobs if logprobs else None,
            stop=stops + formatted.stop, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, repeat_penalty=repeat_penalty, top_k=top_k,
            stream=stream, seed=seed, tfs_z=tfs_z, mirostat_mode=mirostat_mode,
            mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, model=model,
            logits_processor=logits_processor, grammar=grammar, logit_bias=logit_bias)
        if stream:
            chunks = chat.completion_chunks_to_chat(completion)
            return tools_.stream_with_tool_calls(chunks, tool_plan) if tool_plan.offered else chunks
        response = chat.completion_to_chat(completion)
        return tools_.with_tool_calls(response, tool_plan) if tool_plan.offered else response

    @staticmethod
    def _chat_grammar(grammar: Any, response_format: Any, tool_plan: "tools_.ToolPlan") -> Any:
        """The grammar a chat completion samples under: the caller's, or a
        JSON response_format's, or a forced tool call's (only one of them)."""
        wanted = response_format_grammar(response_format)
        if tool_plan.forced:
            if grammar is not None or wanted is not None:
                raise InvalidArgumentError("a forced tool call (tool_choice) brings its own "
                                           "grammar: give no grammar or JSON response_format")
            return tools_.call_grammar(tool_plan)
        if wanted is not None:
            if grammar is not None:
                raise InvalidArgumentError("give grammar or a JSON response_format, not both")
            return wanted
        return grammar

    def _chat_formatter(self):
        """The formatter of chat_format (compiled once per format)."""
        name = self.chat_format
        if name not in self._chat_formatters:
            tok = self._tokenizer
            bos, eos = (tok.token_text(t) if t != NO_TOKEN else ""
                        for t in (tok.bos_id, tok.eos_id))
            self._chat_formatters[name] = chat.chat_formatter(name, self.metadata,
                                                              bos_token=bos, eos_token=eos)
        return self._chat_formatters[name]

    # -- embeddings ----------------------------------------------------------

    def embed(self, input: Union[str, List[str]], normalize: bool = False,
              truncate: bool = True, return_count: bool = False):
        """The embedding of a text (or a list of them, a list of embeddings):
        the final hidden states (after the output norm), pooled as
        pooling_type() says: mean, first token (cls) or last token; with no
        pooling (llama.cpp's choice for models that state none) one vector
        per token. normalize scales each vector to unit length; truncate cuts
        texts to n_batch tokens (otherwise longer texts raise ValueError).
        return_count also returns the number of tokens embedded."""
        if not self._embedding:
            raise RuntimeError("Llama model must be created with embedding=True to call "
                               "this method")
        model = self._live_model()
        if self._pooling_type == LLAMA_POOLING_TYPE_RANK:
            raise UnsupportedModelError("rank pooling needs a classifier head, which "
                                        "llamalite does not run")
        texts = [input] if isinstance(input, str) else list(input)
        vectors, total = [], 0
        for text in texts:
            tokens = self.tokenize(text.encode("utf-8"))
            if truncate:
                tokens = tokens[:self.n_batch]
            if len(tokens) > self.n_batch:
                raise ValueError(f"Requested tokens ({len(tokens)}) exceed batch size of "
                                 f"{self.n_batch}")
            if not tokens:
                raise ValueError(f"cannot embed {text!r}: it has no tokens")
            total += len(tokens)
            vectors.append(_pool(model.hidden(tokens, pos=0), self._pooling_type, normalize))
        self.reset()
        output = vectors[0] if isinstance(input, str) else vectors
        return (output, total) if return_count else output

    def create_embedding(self, input: Union[str, List[str]],
                         model: Optional[str] = None) -> Dict[str, Any]:
        """embed() in OpenAI's `list` shape, with the token count as usage."""
        inputs = input if isinstance(input, list) else [input]
        vectors, total = self.embed(inputs, return_count=True)
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": v, "index": i}
                     for i, v in enumerate(vectors)],
            "model": model if model is not None else self._model_name,
            "usage": {"prompt_tokens": total, "total_tokens": total},
        }

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        """Free the KV cache and unmap the file; the object is unusable after."""
        model, self._model = self._model, None
        if model is not None:
            model.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        self._vocab_only = False

    def __enter__(self) -> "Llama":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @staticmethod
    def logits_to_logprobs(logits: Union[npt.NDArray[np.single], List],
                           axis: int = -1) -> npt.NDArray[np.single]:
        return logits_to_logprobs(logits, axis)

    @staticmethod
    def longest_token_prefix(a: Sequence[int], b: Sequence[int]) -> int:
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return n


class LlamaTokenizer:
    """llama-cpp-python's tokenizer adapter (Llama.tokenizer_)."""

    def __init__(self, llama: Llama):
        self._llama = llama

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> List[int]:
        return self._llama.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, tokens: List[int], prev_tokens: Optional[List[int]] = None,
                   special: bool = False) -> bytes:
        return self._llama.detokenize(tokens, prev_tokens=prev_tokens, special=special)

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> List[int]:
        return self.tokenize(text.encode("utf-8", errors="ignore"), add_bos=add_bos,
                             special=special)

    def decode(self, tokens: List[int]) -> str:
        return self.detokenize(tokens).decode("utf-8", errors="ignore")


# --- one completion ------------------------------------------------------------

class _CompletionRun:
    """One create_completion() call: the prompt's tokens, then a stream of
    text pieces that chunks() wraps as OpenAI chunks and join() joins."""

    def __init__(self, llm: Llama, *, prompt, suffix, max_tokens, logprobs, echo, stop, seed,
                 model, stopping_criteria, sampling):
        if suffix is not None and not isinstance(suffix, str):
            raise TypeError(f"suffix must be a string or None, got {type(suffix).__name__}")
        if logprobs is not None and (isinstance(logprobs, bool) or int(logprobs) < 0):
            raise ValueError(f"logprobs must be None or a count >= 0, got {logprobs!r}")
        llm._live_model()
        self.llm, self.tok = llm, llm._tokenizer
        self.id = f"cmpl-{uuid.uuid4()}"
        self.created = int(time.time())
        self.model = model if model is not None else llm._model_name
        self.echo, self.n_logprobs = echo, logprobs
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        self.stops = [s for s in stops if s]   # an empty stop string would end at once
        self.stopping_criteria = stopping_criteria
        if sampling.get("grammar") is not None:  # a bad grammar fails here, not mid-stream
            sampling = {**sampling, "grammar": as_grammar(sampling["grammar"])}
        self.sampling = sampling
        self.prompt_text, self.prompt_tokens = self._prompt(prompt, suffix)
        n_ctx = llm.n_ctx()
        n_prompt = len(self.prompt_tokens)
        if n_prompt >= n_ctx:
            raise ContextOverflowError(f"Requested tokens ({n_prompt}) exceed "
                                       f"context window of {n_ctx}")
        room = n_ctx - n_prompt
        if max_tokens is not None and max_tokens > room:
            raise ContextOverflowError(
                f"Requested tokens ({n_prompt}) + max_tokens ({max_tokens}) = "
                f"{n_prompt + max_tokens} exceed context window of {n_ctx}")
        self.max_tokens = room if max_tokens is None or max_tokens <= 0 else max_tokens
        llm.set_seed(_next_seed(llm._seed) if seed is None else seed)
        self.completion_tokens: List[int] = []
        self.finish_reason = "length"

    def _prompt(self, prompt, suffix):
        """(prompt text, prompt token ids)."""
        tok = self.tok
        if suffix is not None:
            return self._fim_prompt(prompt, suffix)
        if isinstance(prompt, str):
            text = prompt
            ids = tok.encode(prompt, add_bos=True, special=True) if prompt else []
        else:
            ids = [int(t) for t in prompt]
            text = tok.decode(ids).decode("utf-8", errors="ignore")
        if not ids:
            if tok.bos_id == NO_TOKEN:
                raise ValueError("the prompt is empty and the model has no BOS token to start from")
            ids = [tok.bos_id]
        if ids[:2] == [tok.bos_id] * 2:
            warnings.warn(f'Detected duplicate leading "{tok.token_text(tok.bos_id)}" in prompt, '
                          "this will likely reduce response quality, consider removing it...",
                          RuntimeWarning, stacklevel=4)
        return text, ids

    def _fim_prompt(self, prompt, suffix):
        """Fill-in-the-middle: prefix, suffix, then the middle to generate,
        each after its FIM token (prefix-suffix-middle order, as llama.cpp)."""
        tok = self.tok
        fim = _fim_tokens(tok, self.llm.metadata)
        if fim is None:
            raise UnsupportedModelError(
                "suffix= needs a model with fill-in-the-middle tokens (such as Qwen2.5-Coder's "
                "<|fim_prefix|>, <|fim_suffix|>, <|fim_middle|>); this vocabulary has none")
        pre, suf, mid = fim
        if isinstance(prompt, str):
            text, prefix = prompt, tok.encode(prompt, add_bos=False)
        else:
            prefix = [int(t) for t in prompt]
            text = tok.decode(prefix).decode("utf-8", errors="ignore")
        bos = [tok.bos_id] if tok.add_bos and tok.bos_id != NO_TOKEN else []
        ids = bos + [pre] + prefix + [suf] + tok.encode(suffix, add_bos=False) + [mid]
        return text, ids

    # -- the stream of pieces --

    def pieces(self) -> Iterator[tuple]:
        """(text, logprobs entries or None) in order: the echoed prompt, then
        the completion held back wherever a stop string could begin; sets
        finish_reason and completion_tokens as it goes."""
        llm = self.llm
        llm._timings = _Timings()
        want_logprobs = self.n_logprobs is not None
        if self.echo:
            prompt_entries = self._prompt_logprobs() if want_logprobs else None
            if self.prompt_text or prompt_entries:
                yield self.prompt_text, prompt_entries
        offset = len(self.prompt_text)     # where the next token's text starts
        decoder = self.tok.stream()
        held, entries = "", []
        tokens = llm.generate(self.prompt_tokens, stopping_criteria=self.stopping_criteria,
                              **self.sampling)
        for token in tokens:
            if self.tok.is_eog(token):
                self.finish_reason = "stop"
                break
            self.completion_tokens.append(token)
            if want_logprobs:
                offset = self._add_entry(entries, token, logits_to_logprobs(llm._logits), offset)
            held += decoder.feed(token)
            cut = _first_stop(held, self.stops)
            if cut is not None:
                held = held[:cut]
                self.finish_reason = "stop"
                break
            release = len(held) - _stop_prefix_len(held, self.stops)
            if release > 0:
                yield held[:release], _merged(entries) if want_logprobs else None
                held, entries = held[release:], []
            if len(self.completion_tokens) >= self.max_tokens:
                self.finish_reason = "length"
                break
        else:
            self.finish_reason = "stop"   # a stopping criterion ended it
        tokens.close()
        if held or entries:
            yield held, _merged(entries) if want_logprobs else None
        if llm.verbose:
            llm._print_timings()

    def _add_entry(self, entries: list, token: int, logprobs: Optional[np.ndarray],
                   offset: int) -> int:
        """Append the logprobs entry (token text, text offset, logprob, the best
        alternatives) of a token that starts at character `offset`; logprobs
        None: the first echoed token, which has nothing before it. Returns the
        offset after the token."""
        piece = self._piece(token)
        if logprobs is None:
            entries.append((piece, offset, None, None))
        else:
            chosen = float(logprobs[token])
            top = {self._piece(i): v for i, v in top_logprobs(logprobs, self.n_logprobs)}
            top[piece] = chosen
            entries.append((piece, offset, chosen, top))
        return offset + len(piece)

    def _piece(self, token: int) -> str:
        return self.tok.token_to_piece(token).decode("utf-8", errors="ignore")

    def _prompt_logprobs(self) -> dict:
        """Entries for the echoed prompt (BOS left out): each token scored by
        the logits of the position before it. The prompt is evaluated afresh
        with every position's logits; generation then starts from its cache."""
        self.llm.reset()
        rows = self.llm._timed_eval(self.prompt_tokens, prompt=True, all_logits=True)
        entries, offset = [], 0
        for i, token in enumerate(self.prompt_tokens):
            if token != self.tok.bos_id:
                before = logits_to_logprobs(rows[i - 1]) if entries else None
                offset = self._add_entry(entries, token, before, offset)
        return _merged(entries)

    # -- OpenAI shapes --

    def _chunk(self, text: str, logprobs: Optional[dict], finish: Optional[str]) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"text": text, "index": 0, "logprobs": logprobs,
                             "finish_reason": finish}]}

    def chunks(self) -> Iterator[dict]:
        for text, logprobs in self.pieces():
            yield self._chunk(text, logprobs, None)
        yield self._chunk("", None, self.finish_reason)

    def join(self) -> dict:
        texts, merged = [], None
        for text, logprobs in self.pieces():
            texts.append(text)
            if logprobs is not None:
                merged = logprobs if merged is None else {k: merged[k] + logprobs[k]
                                                          for k in merged}
        if self.n_logprobs is not None and merged is None:
            merged = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
        out = self._chunk("".join(texts), merged, self.finish_reason)
        n_prompt, n_completion = len(self.prompt_tokens), len(self.completion_tokens)
        out["usage"] = {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                        "total_tokens": n_prompt + n_completion}
        return out


# --- helpers -------------------------------------------------------------------

def _merged(entries: list) -> dict:
    """llama-cpp-python's logprobs dict from (token text, offset, logprob, top) entries."""
    return {"tokens": [e[0] for e in entries], "text_offset": [e[1] for e in entries],
            "token_logprobs": [e[2] for e in entries], "top_logprobs": [e[3] for e in entries]}


def _first_stop(text: str, stops: List[str]) -> Optional[int]:
    """Where the earliest stop string in `text` begins, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _stop_prefix_len(text: str, stops: List[str]) -> int:
    """The length of the longest end of `text` that could be the beginning of
    a stop string: what must be held back until the next token decides."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:n]):
                longest = n
                break
    return longest


def _pool(hidden: np.ndarray, pooling: int, normalize: bool):
    """One text's hidden states (tokens x n_embd) pooled as a list of floats,
    or with no pooling a list of them, one per token."""
    if pooling == LLAMA_POOLING_TYPE_NONE:
        rows = hidden
    elif pooling == LLAMA_POOLING_TYPE_MEAN:
        rows = hidden.mean(axis=0, dtype=np.float64)[None]
    elif pooling == LLAMA_POOLING_TYPE_CLS:
        rows = hidden[:1]
    else:
        rows = hidden[-1:]
    rows = rows.astype(np.float64)
    if normalize:
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = np.divide(rows, norms, out=rows.copy(), where=norms > 0)
    vectors = rows.tolist()
    return vectors if pooling == LLAMA_POOLING_TYPE_NONE else vectors[0]


def _metadata_strings(reader: GGUFReader) -> Dict[str, str]:
    """The metadata as llama.cpp shows it to llama-cpp-python: every key that
    is not an array, its value as text (floats as C's %f, bools as true/false)."""
    out = {}
    for key, value in reader.metadata.items():
        if isinstance(value, list):
            continue
        vtype = reader.value_types[key]
        if vtype == GGUFValueType.BOOL:
            out[key] = "true" if value else "false"
        elif vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
            out[key] = f"{value:f}"
        else:
            out[key] = str(value)
    return out


def _fim_tokens(tok: Tokenizer, metadata: Dict[str, str]) -> Optional[tuple]:
    """(prefix, suffix, middle) fill-in-the-middle token ids, or None."""
    keys = ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id",
            "tokenizer.ggml.fim_mid_token_id")
    if all(k in metadata for k in keys):
        return tuple(int(metadata[k]) for k in keys)
    for texts in _FIM_TEXTS:
        ids = [tok.encode(t, add_bos=False, special=True) for t in texts]
        if all(len(i) == 1 and tok.token_text(i[0]) == t for i, t in zip(ids, texts)):
            return tuple(i[0] for i in ids)
    return None


def _only_match(repo_id: str, pattern: str, files: List[str]) -> str:
    matches = [f for f in files if fnmatch.fnmatch(f, pattern)]
    if not matches:
        raise ValueError(f"No file found in {repo_id} that match {pattern}\n\n"
                         f"Available Files:\n{json.dumps(files)}")
    if len(matches) > 1:
        raise ValueError(f"Multiple files found in {repo_id} matching {pattern}\n\n"
                         f"Available Files:\n{json.dumps(matches)}")
    return matches[0]


def _is_random_seed(seed: Optional[int]) -> bool:
    return seed is None or seed in (-1, LLAMA_DEFAULT_SEED)


def _sampler_seed(seed: Optional[int]) -> Optional[int]:
    return None if _is_random_seed(seed) else int(seed) & 0xFFFFFFFF


def _next_seed(seed: Optional[int]) -> int:
    """The seed of a completion given none: derived from the Llama's seed, so
    Llama(seed=42) repeats its sequence of completions (llama-cpp-python's
    rule); a random Llama seed gives a fresh random seed each call."""
    if _is_random_seed(seed):
        return LLAMA_DEFAULT_SEED
    return random.Random(seed).randint(0, 2**32 - 2)


def _kv_type(type_k: Optional[int], type_v: Optional[int]) -> str:
    chosen = {t for t in (type_k, type_v) if t is not None}
    if not chosen:
        return "F16"
    if len(chosen) > 1 or next(iter(chosen)) not in _KV_TYPE_IDS:
        raise UnsupportedModelError(f"KV cache types type_k={type_k}, type_v={type_v}: "
                                    "llamalite keeps K and V alike, as F16 (1) or F32 (0)")
    return _KV_TYPE_IDS[next(iter(chosen))]


_DEFAULTS = {"kv_overrides": None, "rope_freq_base": 0.0, "rope_freq_scale": 0.0,
             "rope_scaling_type": (None, -1), "attention_type": (-1, 0),
             "yarn_ext_factor": (-1.0, 0.0), "yarn_attn_factor": (1.0, 0.0),
             "yarn_beta_fast": (32.0, 0.0), "yarn_beta_slow": (1.0, 0.0), "yarn_orig_ctx": 0,
             "lora_base": None, "lora_path": None, "draft_model": None, "tokenizer": None}


def _refuse_unsupported(**given: Any) -> None:
    for name, value in given.items():
        allowed = _DEFAULTS[name]
        allowed = allowed if isinstance(allowed, tuple) else (allowed,)
        if allowed[0] is None and not value:
            continue
        if not any(value is a or (a is not None and value == a) for a in allowed):
            raise UnsupportedModelError(f"Llama({name}={value!r}) is not supported by llamalite "
                                        f"(leave it at {allowed[0]!r})")


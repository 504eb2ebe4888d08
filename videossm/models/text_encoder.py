"""Prompt -> text embeddings, through a UMT5 encoder (Wan2.1's text encoder class at every scale).

Prompts are tokenized, padded to `max_length`, encoded, and the padded positions are zeroed (Wan's
convention; there is no cross-attention mask). Embeddings are cached per prompt, so a timeline that
returns to a prompt, or a demo that repeats one, pays nothing. With `cache_dir` they are also kept on
disk (one safetensors file per prompt, keyed by the encoder's id and the prompt's hash, written to a
temporary file and renamed into place, so concurrent writers never leave a torn file), so repeated demo
prompts cost nothing across restarts either.

`offload=True` keeps the encoder on the CPU and moves it to `device` only while it encodes (the 1.3B
model's UMT5-XXL is 10.6 GiB in bf16; see videossm/weights/hub.py for the memory plan).

The shipped small model uses a word-level tokenizer built from the world's grammar; a word outside
its vocabulary is refused with the list of words it knows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict

import torch
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


class PromptError(ValueError):
    """A prompt the text encoder cannot take."""


def word_level_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A lower-casing, whitespace-splitting tokenizer over `words`, appending </s> like T5's."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_umt5_config(vocab_size: int, d_model: int) -> UMT5Config:
    return UMT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=max(8, d_model // 4), d_ff=2 * d_model,
                      num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                      relative_attention_max_distance=32, dropout_rate=0.0, pad_token_id=0, eos_token_id=1)


def encode_token_ids(model: UMT5EncoderModel, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """input_ids, mask [B, L] -> embeddings [B, L, D] (float32) with padded positions exactly zero.
    Differentiable: training (the teacher stage trains the small encoder) and inference share it."""
    hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return hidden.float() * mask.to(hidden.device)[..., None]


class TextEncoder:
    def __init__(self, model: UMT5EncoderModel, tokenizer, max_length: int, device: str | torch.device = "cpu",
                 word_level: bool = False, cache_size: int = 256, *, offload: bool = False,
                 cache_dir: str | None = None, cache_id: str | None = None):
        self.compute_device = torch.device(device)
        self.offload = offload and self.compute_device.type != "cpu"
        self.model = model.eval().to("cpu" if self.offload else self.compute_device)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.word_level = word_level
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size
        if cache_dir is not None and not cache_id:
            raise ValueError("a disk cache needs cache_id (the encoder's identity, e.g. repo@revision:file)")
        self.cache_dir = cache_dir
        self.cache_id = cache_id
        self._lock = threading.Lock()  # one encoder serves every stream of the process

    @property
    def device(self) -> torch.device:
        """Where the model's weights are now (the CPU between encodes when offloaded)."""
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    def known_words(self) -> list[str]:
        return [w for w, _ in sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
                if w not in SPECIAL_TOKENS]

    def check(self, prompt: str) -> list[int]:
        """Validate a prompt and return its token ids (with </s>)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"prompt must be a non-empty string, got {prompt!r}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PromptError(f"prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        if self.word_level:
            known = set(self.known_words())
            unknown = [w for w in re.findall(r"\S+", prompt.lower()) if w not in known]
            if unknown:
                raise PromptError(f"this model does not know the word(s) {unknown}; it knows: "
                                  f"{', '.join(self.known_words())}")
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if len(ids) > self.max_length:
            raise PromptError(f"prompt is {len(ids)} tokens long; the limit is {self.max_length} tokens")
        return ids

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated prompts -> input_ids and attention mask [B, max_length] (long), on the encoder's device."""
        input_ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)  # [B, L], 0 = <pad>
        mask = torch.zeros_like(input_ids)
        for row, prompt in enumerate(prompts):
            ids = self.check(prompt)
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def encode(self, prompt: str) -> torch.Tensor:
        """[1, max_length, dim] float32 on the encoder's device; padded positions are exactly zero."""
        with self._lock:
            return self._encode(prompt)

    def disk_path(self, prompt: str) -> str | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"{self.cache_id}\n{self.max_length}\n{prompt}".encode()).hexdigest()
        return os.path.join(self.cache_dir, key[:2], key + ".safetensors")

    def _read_disk(self, prompt: str) -> torch.Tensor | None:
        path = self.disk_path(prompt)
        if path is None or not os.path.isfile(path):
            return None
        from safetensors.torch import load_file

        try:
            stored = load_file(path)
            tokens, prompt_hash = stored["embedding"], stored["prompt_sha256"]  # [n, D]
        except Exception as e:  # noqa: BLE001 - a bad cache file is recomputed, never fatal
            logger.warning("prompt-embedding cache file %s unreadable (%s); recomputing", path, e)
            return None
        if bytes(prompt_hash.tolist()) != hashlib.sha256(prompt.encode()).digest() or tokens.shape[0] > self.max_length:
            return None
        hidden = torch.zeros(1, self.max_length, tokens.shape[1])
        hidden[0, : tokens.shape[0]] = tokens.float()
        return hidden

    def _write_disk(self, prompt: str, tokens: torch.Tensor) -> None:
        """tokens [n, D]: the unpadded embedding (the padding is zero by construction)."""
        path = self.disk_path(prompt)
        if path is None:
            return
        from safetensors.torch import save_file

        prompt_hash = torch.tensor(list(hashlib.sha256(prompt.encode()).digest()), dtype=torch.uint8)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".partial")
            os.close(fd)
            try:
                save_file({"embedding": tokens.detach().cpu().contiguous(), "prompt_sha256": prompt_hash}, tmp)
                os.replace(tmp, path)  # atomic: readers see the old state or the whole file
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as e:
            logger.warning("cannot write the prompt-embedding cache %s (%s)", path, e)

    @torch.no_grad()
    def _encode(self, prompt: str) -> torch.Tensor:
        if prompt in self._cache:
            self._cache.move_to_end(prompt)
            return self._cache[prompt]
        ids = self.check(prompt)
        hidden = self._read_disk(prompt)
        if hidden is None:
            hidden = self._run_model(ids)
            self._write_disk(prompt, hidden[0, : len(ids)])
        else:
            hidden = hidden.to(self.compute_device if not self.offload else "cpu")
        self._cache[prompt] = hidden
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return hidden

    def _run_model(self, ids: list[int]) -> torch.Tensor:
        """[1, max_length, D] float32, padded positions exactly zero."""
        input_ids = torch.zeros(1, self.max_length, dtype=torch.long)
        input_ids[0, : len(ids)] = torch.tensor(ids)
        mask = torch.zeros_like(input_ids)
        mask[0, : len(ids)] = 1
        if self.offload:
            self.model.to(self.compute_device)
        try:
            device = self.device
            hidden = encode_token_ids(self.model, input_ids.to(device), mask.to(device)).contiguous()  # [1, L, D]
        finally:
            if self.offload:
                self.model.to("cpu")
                torch.cuda.empty_cache()
        return hidden.cpu() if self.offload else hidden

    def save_pretrained(self, path: str) -> None:
        self.model.save_pretrained(os.path.join(path, "text_encoder"))
        self.tokenizer.save_pretrained(os.path.join(path, "tokenizer"))

    @classmethod
    def from_pretrained(cls, path: str, max_length: int, word_level: bool, device="cpu") -> "TextEncoder":
        model = UMT5EncoderModel.from_pretrained(os.path.join(path, "text_encoder"))
        tokenizer = PreTrainedTokenizerFast.from_pretrained(os.path.join(path, "tokenizer"))
        return cls(model, tokenizer, max_length, device, word_level=word_level)


class RandomTextEncoder:
    """Text embeddings drawn at random, of the shape a real encoder gives ([1, max_length, dim]), for
    speed and memory measurements of a preset without downloading its text encoder (UMT5-XXL for Wan).
    Each prompt gets its own fixed embedding (seeded by the prompt's CRC32), so prompt switches still
    change the conditioning. Float32, like `TextEncoder`'s output."""

    word_level = False

    def __init__(self, max_length: int, dim: int, device: str | torch.device = "cpu", seed: int = 0):
        self.max_length = max_length
        self.dim = dim
        self._device = torch.device(device)
        self.seed = seed
        self._cache: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return self._device

    def known_words(self) -> list[str]:
        return []

    def check(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"prompt must be a non-empty string, got {prompt!r}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PromptError(f"prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        return []

    def encode(self, prompt: str) -> torch.Tensor:
        """[1, max_length, dim] float32: N(0, 1) / sqrt(dim) per value, fixed per prompt."""
        import zlib

        with self._lock:
            if prompt not in self._cache:
                self.check(prompt)
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(prompt.encode()))
                embeds = torch.randn(1, self.max_length, self.dim, generator=g) / self.dim ** 0.5  # [1, L, D]
                self._cache[prompt] = embeds.to(self._device)
            return self._cache[prompt]

    def save_pretrained(self, path: str) -> None:
        raise NotImplementedError("random text embeddings have no weights to save; this pipeline is for benchmarks")

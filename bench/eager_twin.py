#!/usr/bin/env python3
"""The SHC transformer written in plain eager PyTorch: the twin of the C++ model for the
"C++ >= 1.3x the tokens/s of eager PyTorch" comparison (issue 9, SPEC §12). A benchmark, not a
dependency: nothing in the build or the C++ code uses it.

Same math as core/ (SPEC §4.1), for the `residual` and `shc` kinds:
  token embedding (tied with the LM head) -> S0[i] = e for each of n streams
  per block, for the attention and the SwiGLU FFN sublayer:
    x~  = RMSNorm(vec S)                                (no gain; fp32)
    raw = x~ [W_mix; W_pre; W_post]^T                    (one GEMM for the three projections)
    alpha = softmax(b_mix + s_mix raw_mix)               (top_k = K: dense softmax)
    H_res = sum_i alpha_i Q_i, Q_i = Cayley(A_i) = solve(I + A_i, I - A_i), once per forward
    H_pre = sigmoid(b_pre + s_pre raw_pre), H_post = 2 sigmoid(b_post + s_post raw_post)
    u = H_pre S;  y = f(RMSNorm(u));  S' = H_res S + H_post (x) y
  (the plain residual: S' = S + f(RMSNorm(S)))
  after the last block: the r = 1 stream reduction U^T S, U = Cayley(A) U_0 (Helmert column),
  RMSNorm, tied LM head, next-token cross entropy (shift once, ignore_index -100).
Attention: q / fused kv / o projections without bias, NeoX rotary (base 10000, fp32 angles
computed per call), causal scaled_dot_product_attention. Parameter counts equal the C++
model's (`shc profile` logs them).

The timing mirrors `shc profile`'s forward_backward_tokens_per_s: one warm-up, then `repeats`
of zero_grad + loss + backward on the same random batch; tokens/s = batch * seq * repeats / s.

  .venv/bin/python bench/eager_twin.py --preset tiny --residual shc --batch 16 --seq-len 128
  .venv/bin/python bench/eager_twin.py --preset small --residual residual --layers 4 \\
      --batch 8 --seq-len 256

and compare with `build/bin/shc profile --model.preset tiny --model.residual shc
--profile.batch 16 --profile.seq_len 128 --profile.threads 2 --profile.generate_tokens 0`.
Prints one JSON object.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

# core/config.cpp presets: vocab, hidden, layers, heads, ffn, max_seq_len.
PRESETS = {
    "tiny": dict(vocab=257, hidden=128, layers=4, heads=4, ffn=384, max_seq_len=256),
    "small": dict(vocab=257, hidden=512, layers=8, heads=8, ffn=1408, max_seq_len=1024),
}
NORM_EPS = 1e-6
INIT_STD = 0.02


def rms_normalize(x):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS)


class RMSNorm(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return (rms_normalize(x) * self.weight).to(x.dtype)


def apply_rotary(x, base=10000.0):
    t, half = x.shape[-2], x.shape[-1] // 2
    inv_freq = base ** (-torch.arange(0, half, dtype=torch.float32) / half)
    angles = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
    cos = torch.cat([angles.cos(), angles.cos()], -1)
    sin = torch.cat([angles.sin(), angles.sin()], -1)
    xf = x.float()
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], -1)
    return (xf * cos + rotated * sin).to(x.dtype)


class Attention(torch.nn.Module):
    def __init__(self, d, heads, out_std):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q_proj = torch.nn.Linear(d, d, bias=False)
        self.kv_proj = torch.nn.Linear(d, 2 * d, bias=False)
        self.o_proj = torch.nn.Linear(d, d, bias=False)
        for lin, std in ((self.q_proj, INIT_STD), (self.kv_proj, INIT_STD), (self.o_proj, out_std)):
            torch.nn.init.normal_(lin.weight, 0, std)

    def forward(self, x):
        b, t, _ = x.shape

        def heads(p):
            return p.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q = apply_rotary(heads(self.q_proj(x)))
        k, v = self.kv_proj(x).chunk(2, -1)
        k, v = apply_rotary(heads(k)), heads(v)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(torch.nn.Module):
    def __init__(self, d, ffn, out_std):
        super().__init__()
        self.gate_up = torch.nn.Linear(d, 2 * ffn, bias=False)
        self.down = torch.nn.Linear(ffn, d, bias=False)
        torch.nn.init.normal_(self.gate_up.weight, 0, INIT_STD)
        torch.nn.init.normal_(self.down.weight, 0, out_std)

    def forward(self, x):
        g, u = self.gate_up(x).chunk(2, -1)
        return self.down(F.silu(g) * u)


def cayley(skew):
    eye = torch.eye(skew.shape[-1], dtype=skew.dtype).expand_as(skew)
    return torch.linalg.solve_ex(eye + skew, eye - skew)[0]


class CayleyTransform(torch.nn.Module):
    """k orthogonal n x n matrices from the strict upper triangles A = P - P^T."""

    def __init__(self, n, k, init_scale):
        super().__init__()
        self.n, self.k = n, k
        rows, cols = torch.triu_indices(n, n, 1)
        self.register_buffer("upper_index", rows * n + cols)
        self.upper = torch.nn.Parameter(torch.randn(k, n * (n - 1) // 2) * init_scale)

    def forward(self):
        flat = torch.zeros(self.k, self.n * self.n, dtype=self.upper.dtype)
        p = flat.index_copy(1, self.upper_index, self.upper).view(self.k, self.n, self.n)
        return cayley((p - p.transpose(1, 2)).float())


class DynamicProjection(torch.nn.Module):
    """bias + scale * (x W^T); W starts at zero."""

    def __init__(self, inp, out, init_scale, bias=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(out, inp))
        self.bias = torch.nn.Parameter(torch.zeros(out) if bias is None else bias.clone())
        self.scale = torch.nn.Parameter(torch.full((1,), init_scale))

    def finish(self, raw):
        return self.bias + self.scale * raw


class SHCRouting(torch.nn.Module):
    """One sublayer's hyper-connection of kind shc (core/routing/shc_router.cpp)."""

    def __init__(self, n, d, k, depth, init_scale=0.01):
        super().__init__()
        self.n = n
        read = torch.full((n,), -3.0)
        read[depth % n] = 3.0
        self.mix = DynamicProjection(n * d, k, init_scale)
        self.bases = CayleyTransform(n, k, init_scale)
        self.pre = DynamicProjection(n * d, n, init_scale, read)
        self.post = DynamicProjection(n * d, n, init_scale)

    def route(self, s):
        x = rms_normalize(s.flatten(-2))
        w = torch.cat([self.mix.weight, self.pre.weight, self.post.weight], 0)
        raw_mix, raw_pre, raw_post = torch.matmul(x, w.t()).split(
            [self.mix.weight.shape[0], self.n, self.n], -1)
        alpha = torch.softmax(self.mix.finish(raw_mix), -1)
        q = self.bases()
        res = torch.matmul(alpha, q.reshape(q.shape[0], -1)).view(*alpha.shape[:-1], self.n, self.n)
        pre = torch.sigmoid(self.pre.finish(raw_pre))
        post = 2 * torch.sigmoid(self.post.finish(raw_post))
        return pre, post, res

    @staticmethod
    def read(s, routing):
        pre = routing[0]
        return torch.matmul(pre.unsqueeze(-2).to(s.dtype), s).squeeze(-2)

    @staticmethod
    def write(s, y, routing):
        _, post, res = routing
        return torch.matmul(res.to(s.dtype), s) + post.to(s.dtype).unsqueeze(-1) * y.unsqueeze(-2)


class Block(torch.nn.Module):
    def __init__(self, cfg, layer, residual, n, k):
        super().__init__()
        d = cfg["hidden"]
        out_std = INIT_STD / math.sqrt(2 * cfg["layers"])
        self.residual = residual
        if residual == "shc":
            self.attn_hc = SHCRouting(n, d, k, 2 * layer)
            self.ffn_hc = SHCRouting(n, d, k, 2 * layer + 1)
        self.attn_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)
        self.attn = Attention(d, cfg["heads"], out_std)
        self.ffn = FeedForward(d, cfg["ffn"], out_std)

    def forward(self, s):
        if self.residual == "residual":  # s: (batch, T, 1, d)
            x = s.squeeze(-2)
            x = x + self.attn(self.attn_norm(x))
            x = x + self.ffn(self.ffn_norm(x))
            return x.unsqueeze(-2)
        r = self.attn_hc.route(s)
        s = self.attn_hc.write(s, self.attn(self.attn_norm(self.attn_hc.read(s, r))), r)
        r = self.ffn_hc.route(s)
        return self.ffn_hc.write(s, self.ffn(self.ffn_norm(self.ffn_hc.read(s, r))), r)


class StreamReducer(torch.nn.Module):
    """FactorizedKVCache(n, d, r = 1).compress: U^T S with U = Cayley(A) U_0."""

    def __init__(self, n):
        super().__init__()
        self.rotation = CayleyTransform(n, 1, 0.0)
        self.register_buffer("initial_basis", torch.full((n, 1), 1.0 / math.sqrt(n)))

    def forward(self, s):
        u = torch.matmul(self.rotation()[0], self.initial_basis)
        return torch.matmul(u.t().to(s.dtype), s)


class Model(torch.nn.Module):
    def __init__(self, cfg, residual, n=4, k=2):
        super().__init__()
        self.residual, self.n = residual, (n if residual == "shc" else 1)
        self.tok_embeddings = torch.nn.Embedding(cfg["vocab"], cfg["hidden"])
        torch.nn.init.normal_(self.tok_embeddings.weight, 0, INIT_STD)
        self.blocks = torch.nn.ModuleList(
            Block(cfg, layer, residual, n, k) for layer in range(cfg["layers"]))
        self.stream_reducer = StreamReducer(n) if residual == "shc" else None
        self.final_norm = RMSNorm(cfg["hidden"])

    def forward(self, ids, labels):
        e = self.tok_embeddings(ids).unsqueeze(-2)
        s = e.expand(-1, -1, self.n, -1).contiguous() if self.n > 1 else e
        for block in self.blocks:
            s = block(s)
        x = self.stream_reducer(s) if self.stream_reducer is not None else s
        h = self.final_norm(x.squeeze(-2))
        logits = torch.matmul(h, self.tok_embeddings.weight.t()).float()
        vocab = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1),
                               ignore_index=-100)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--residual", choices=["residual", "shc"], default="shc")
    p.add_argument("--layers", type=int, help="override the preset's layer count")
    p.add_argument("--hidden", type=int, help="override the preset's hidden size")
    p.add_argument("--heads", type=int, help="override the preset's head count")
    p.add_argument("--ffn", type=int, help="override the preset's FFN width")
    p.add_argument("--streams", type=int, default=4, help="n (shc)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = dict(PRESETS[args.preset])
    for key in ("layers", "hidden", "heads", "ffn"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.seq_len > cfg["max_seq_len"] or args.seq_len < 2:
        p.error(f"--seq-len must be in [2, {cfg['max_seq_len']}]")
    model = Model(cfg, args.residual, n=args.streams)
    ids = torch.randint(cfg["vocab"], (args.batch, args.seq_len))
    tokens = args.batch * args.seq_len

    def rate(step):
        step()  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            step()
        return tokens * args.repeats / (time.perf_counter() - start)

    def forward():
        with torch.no_grad():
            model(ids, ids)

    def forward_backward():
        model.zero_grad()
        model(ids, ids).backward()

    model.eval()
    fwd = rate(forward)
    model.train()
    fwd_bwd = rate(forward_backward)
    print(json.dumps({
        "benchmark": "eager_twin",
        "torch": torch.__version__,
        "preset": args.preset,
        "residual": args.residual,
        "n_streams": model.n,
        **{k: cfg[k] for k in ("hidden", "layers", "heads", "ffn", "vocab")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "forward_tokens_per_s": fwd,
        "forward_backward_tokens_per_s": fwd_bwd,
    }, indent=2))


if __name__ == "__main__":
    main()

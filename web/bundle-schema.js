// Generated from ditformat/bundle-schema.json, decoder-schema.json and reach.json by `python -m ditformat`; do not edit.
export const SCHEMA = {
 "_doc": "The manifest.json schema, read by runtime_py/verify.py (through ditformat/schema.py) and by web/bundle.js (through web/bundle-schema.js, written by `python -m ditformat`). Types: int [lo, hi], number, bool, string, hex64, object, form3 = [b, n, c] non-negative ints, form4 = [b, n, c, d] with d >= 1; {enum}, {list, len?, max?}, {map}, {fields, optional?}, {tagged, cases}, {all: [spec, ...]} (every spec in turn), and the named types of `types` (shared with decoder-schema.json). docs/bundle-format.md explains every field.",
 "format": "ditweb-bundle",
 "format_version": 4,
 "exporter_version": "0.4.0",
 "step_bytes": 128,
 "max_branches": 8,
 "max_bytes": 2147483648,
 "file_name": {
  "segment": "[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}",
  "max_length": 255,
  "_doc": "a listed file name: segments of this pattern (ASCII) joined by '/', at most max_length characters"
 },
 "max_json_depth": 32,
 "binding_types": ["uniform", "read-only-storage", "storage"],
 "programs": ["forward", "init", "step_begin", "step_end"],
 "label_ops": ["label_embed", "label_embed_q8"],
 "weight_encodings": {
  "q4k": {
   "group": 32,
   "q_max": 7,
   "k_min": 1,
   "k_max": 18,
   "steps_suffix": ".k",
   "dtype": "i8",
   "_doc": "an i8 buffer [N, K] (K a multiple of group) stored in 4 bits: its value at (r, c) is q * k with q the signed nibble c of row r (-q_max..q_max, two's complement; byte c/2 of the row, the low nibble for even c) of the U8 tensor `tensor` [N, K/2], and k the U8 value [r, c/group] (k_min..k_max) of the tensor `tensor` + steps_suffix [N, K/group] in the same shard; runtimes unpack it at load into the i8 buffer (exact: |q k| <= 126)"
  }
 },
 "types": {
  "prediction": {"enum": ["eps", "v"]},
  "manifest_head": {
   "fields": {
    "format": "string",
    "format_version": {"int": [0, 1000000]},
    "exporter": "string",
    "dtype": {"enum": ["f32", "f16", "int8", "int4"]}
   }
  },
  "model": {
   "fields": {
    "input_size": {"int": [1, 1024]},
    "patch_size": {"int": [1, 64]},
    "in_channels": {"int": [1, 64]},
    "hidden_size": {"int": [4, 16384]},
    "depth": {"int": [1, 256]},
    "num_heads": {"int": [1, 1024]},
    "mlp_ratio": {"number": [0.0625, 16]},
    "num_classes": {"int": [1, 100000]},
    "learn_sigma": "bool",
    "conditioning": {"enum": ["adaln-zero", "adaln", "cross-attn", "in-context"]},
    "prediction": "prediction",
    "label_levels": {"list": {"int": [1, 100000]}, "max": 8},
    "label_nested": {"int": [1, 8]}
   },
   "optional": ["label_levels", "label_nested"]
  },
  "dispatch": {
   "fields": {
    "kernel": "string",
    "label": "string",
    "bindings": {"list": "string", "max": 16},
    "params": {"list": "form3", "max": 64},
    "workgroups": {"list": "form4", "len": 3}
   }
  },
  "binding": {
   "fields": {"binding": {"int": [0, 16]}, "type": {"enum": ["uniform", "read-only-storage", "storage"]}}
  },
  "files": {"map": {"fields": {"size": {"int": [0, 2147483648]}, "sha256": "hex64"}}},
  "kernel": {
   "fields": {
    "file": "string",
    "op": "string",
    "variant": "object",
    "workgroup_size": {"list": {"int": [1, 1024]}, "len": 3},
    "params": {"list": "string", "max": 64},
    "bindings": {"list": "binding", "max": 17}
   }
  },
  "weight": {
   "fields": {
    "tensor": "string",
    "dtype": {"enum": ["f32", "f16", "i8"]},
    "shape": {"list": {"int": [0, 2147483648]}, "max": 8},
    "bytes": {"int": [1, 2147483647]},
    "file": "string",
    "encoding": {"enum": ["q4k"]}
   },
   "optional": ["file", "encoding"]
  }
 },
 "manifest": {
  "all": [
   "manifest_head",
   {
    "fields": {
     "model": "model",
     "class_names": {"list": "string", "max": 100000},
     "null_class": {"int": [1, 100000]},
     "io": {
      "fields": {
       "x": "string",
       "x_shape": {"list": {"int": [1, 1024]}, "len": 3},
       "t": "string",
       "y": "string",
       "out": "string",
       "out_shape": {"list": {"int": [1, 1024]}, "len": 3},
       "sample": "string"
      }
     },
     "files": "files",
     "limits": {"map": {"int": [0, 2147483648]}},
     "kernels": {"map": {"all": ["kernel", {"fields": {"groups": {"list": "string", "len": 3}}}]}},
     "buffers": {
      "map": {
       "tagged": "kind",
       "cases": {
        "weight": "weight",
        "activation": {"fields": {"dtype": {"enum": ["f32", "u32"]}, "elements": "form3"}},
        "step": {"fields": {"bytes": {"int": [128, 128]}}}
       }
      }
     },
     "programs": {
      "fields": {
       "forward": {"list": "dispatch"},
       "init": {"list": "dispatch"},
       "step_begin": {"list": "dispatch"},
       "step_end": {"list": "dispatch"}
      }
     },
     "sampler": {
      "fields": {
       "prediction": "prediction",
       "schedule": {"enum": ["linear"]},
       "num_timesteps": {"int": [1000, 1000]},
       "beta_start": {"number": [1e-08, 0.5]},
       "beta_end": {"number": [1e-08, 0.5]}
      }
     },
     "candidates": {"map": {"list": "string", "max": 16}},
     "guidance": {"fields": {"max_branches": {"int": [1, 8]}}}
    },
    "optional": ["limits", "null_class", "guidance", "candidates"]
   }
  ]
 }
};
export const DECODER_SCHEMA = {
 "_doc": "The schema of decoder/manifest.json, the VAE decoder of a latent bundle (docs/vae.md, 'Bundles with a decoder'), checked by runtime_py/verify.py verify_decoder and web/decode.js (through web/bundle-schema.js) with the same schema walk as the bundle's manifest: the named types (manifest_head, dispatch, binding, files, kernel, weight, form3, hex64) are bundle-schema.json's, so a decoder's head (format, version, exporter, dtype), kernels, weights and files are the bundle's, less a kernel's workgroup rule (`groups`: a decoder has no candidates) and with each weight's shard file named. ops: the kernels a decoder may use (wgsl/ops.py). preview (optional): the weight buffer holding the preview map, a (k k C + 1, Co f f) f32 matrix, and k (1 or 3; docs/vae.md, 'Live previews').",
 "format": "ditweb-decoder",
 "format_version": 1,
 "ops": ["bmm", "conv2d", "conv2d_q8", "groupnorm", "softmax_rows", "upsample_nearest"],
 "manifest": {
  "all": [
   "manifest_head",
   {
    "fields": {
     "vae": {
      "fields": {
       "latent_channels": {"int": [1, 64]},
       "out_channels": {"int": [1, 4]},
       "block_out_channels": {"list": {"int": [1, 4096]}, "max": 8},
       "layers_per_block": {"int": [0, 16]},
       "norm_num_groups": {"int": [1, 4096]},
       "norm_eps": {"number": [0, 1]},
       "scaling_factor": {"number": [1e-06, 1000000]},
       "shift_factor": {"number": [-1000000, 1000000]},
       "use_post_quant_conv": "bool",
       "mid_block_add_attention": "bool"
      }
     },
     "latent_shape": {"list": {"int": [1, 1024]}, "len": 3},
     "image_shape": {"list": {"int": [1, 16384]}, "len": 3},
     "io": {"fields": {"latent": "string", "image": "string"}},
     "files": "files",
     "kernels": {"map": "kernel"},
     "buffers": {
      "map": {
       "tagged": "kind",
       "cases": {
        "weight": {"all": ["weight", {"fields": {"file": "string"}}]},
        "activation": {"fields": {"dtype": {"enum": ["f32"]}, "elements": "form3"}}
       }
      }
     },
     "program": {"list": "dispatch", "max": 100000},
     "preview": {"fields": {"buffer": "string", "k": {"int": [1, 3]}}}
    },
    "optional": ["preview"]
   }
  ]
 }
};
export const REACH = {
 "_doc": "How far each dispatch reaches into each buffer it binds, from its params: one rule per op (read by ditformat/reach.py and web/bundle.js through web/bundle-schema.js). need[i] is the number of elements (4-byte words of an activation, values of a weight tensor) that binding i+1 reaches: largest index + 1; 0 for a uniform. Expressions over the op's params, $B / $N (the batch), $g0..$g2 (the dispatch's workgroup counts) and $NAME (an integer of the kernel's variant): integers, + - * / (floor division) %, cdiv(a, b), max, min, eq (1 if equal else 0), and the names of `let` (evaluated in order; a string names one of `lets`, the let-sets ops share: a q8 op is its design with one more binding, the scales). Every divisor must be positive. The WebAssembly runtime (web/wasm-runtime.js EXTENTS) computes the same for the ops it runs. docs/bundle-format.md, 'Buffer reach'.",
 "batches": [[1, 1], [2, 1], [2, 2], [6, 3], [48, 8]],
 "aliases": {
  "matmul_shared": "matmul",
  "matmul_8x4": "matmul",
  "matmul_8x8": "matmul",
  "matmul_shared64": "matmul",
  "layernorm_rows": "layernorm_mod",
  "attention_direct": "attention",
  "attention_q4": "attention"
 },
 "lets": {
  "matmul": {"dst_rows": "(M - 1) / out_group * out_stride + (M - 1) % out_group + 1"},
  "conv2d": {
   "items": "(blocks - 1) / (cdiv(W, 8) * H) + 1",
   "wrows": "C_in * $k * $k",
   "w4": "max(C_out4 / 4, (C_out - 1) / 8 * 2 + 1)",
   "src": "items * C_in * H * W",
   "w": "4 * ((wrows - 1) * (C_out4 / 4) + w4)",
   "res": "eq(has_res, 1) * items * C_out * H * W",
   "dst": "items * C_out * H * W"
  }
 },
 "ops": {
  "matmul": {"divisors": ["out_group"], "let": "matmul", "need": ["M * K", "N * K", "N", "dst_rows * N"]},
  "matmul_q8": {"divisors": ["out_group"], "let": "matmul", "need": ["M * K", "N * K", "N", "N", "dst_rows * N"]},
  "matmul_naive": {"divisors": [], "need": ["M * K", "N * K", "N", "M * N"]},
  "layernorm_mod": {
   "divisors": ["T"],
   "let": {"last": "(rows - 1) / T"},
   "need": [
    "(max(last * T_in + (rows - 1) % T, min(last, 1) * ((last - 1) * T_in + T - 1)) + 1) * D",
    "eq(has_mod, 1) * (last * mod_stride + max(shift_off, scale_off) + D)",
    "rows * D"
   ]
  },
  "attention": {
   "divisors": [],
   "need": [
    "(batch * T_q - 1) * q_stride + q_off + H * $head_dim",
    "(batch * T_kv - 1) * kv_stride + max(k_off, v_off) + H * $head_dim",
    "(batch * T_q - 1) * out_stride + H * $head_dim"
   ]
  },
  "gated_residual": {
   "divisors": ["D", "T"],
   "need": ["count", "count", "eq(has_gate, 1) * ((cdiv(count, D * T) - 1) * mod_stride + gate_off + D)"]
  },
  "patchify": {"divisors": ["p", "C * I * I"], "need": ["count", "count"]},
  "unpatchify": {"divisors": ["p", "C * I * I"], "need": ["count", "count"]},
  "pos_embed_add": {"divisors": ["D * T"], "need": ["(cdiv(count, D * T) - 1) * T_buf * D + T * D", "T * D"]},
  "timestep_embed": {"divisors": ["half"], "need": ["cdiv(count, 2 * half)", "half", "count"]},
  "label_embed": {
   "divisors": ["D", "rows", "levels"],
   "need": ["cdiv(count, D) * levels", "rows * D", "count", "count", "count"]
  },
  "label_embed_q8": {
   "divisors": ["D", "rows", "levels"],
   "need": ["cdiv(count, D) * levels", "rows * D", "rows", "count", "count", "count"]
  },
  "cond_tokens": {
   "divisors": ["D"],
   "need": ["cdiv(count, 2)", "cdiv(count, 2)", "(cdiv(count, 2 * D) - 1) * T_dst * D + (tok0 + 2) * D"]
  },
  "rng_normal": {"divisors": [], "need": ["0", "count"]},
  "expand_batch": {"divisors": ["P"], "need": ["0", "$N * P", "count", "B"]},
  "guide_combine": {"divisors": ["P2", "C_out"], "need": ["0", "$B * C_out * P2", "count"]},
  "sampler_step": {"divisors": ["P2", "C"], "need": ["0", "$N * (1 + eq(learn_sigma, 1)) * C * P2", "count"]},
  "conv2d": {"divisors": ["H", "W"], "let": "conv2d", "need": ["src", "w", "C_out", "res", "dst"]},
  "conv2d_q8": {"divisors": ["H", "W"], "let": "conv2d", "need": ["src", "w", "C_out", "C_out", "res", "dst"]},
  "groupnorm": {
   "divisors": ["G"],
   "let": {"span": "((rows - 1) / G * C + G * (C / G)) * HW"},
   "need": ["span", "G * (C / G)", "G * (C / G)", "span"]
  },
  "upsample_nearest": {"divisors": ["H", "W"], "need": ["cdiv(count, 4 * H * W) * H * W", "count"]},
  "bmm": {
   "divisors": [],
   "let": {"nb": "max(batch, $g2)"},
   "need": [
    "a_off + (nb - 1) * a_sb + (M - 1) * a_sm + (K - 1) * a_sk + 1",
    "b_off + (nb - 1) * b_sb + (N - 1) * b_sn + (K - 1) * b_sk + 1",
    "nb * M * N"
   ]
  },
  "softmax_rows": {"divisors": [], "need": ["rows * L"]}
 }
};

// Generated from ditformat/bundle-schema.json and ditformat/decoder-schema.json by `python -m ditformat`; do not edit.
export const SCHEMA = {
 "_doc": "The manifest.json schema, read by runtime_py/verify.py (through ditformat/schema.py) and by web/bundle.js (through web/bundle-schema.js, written by `python -m ditformat`). Types: int [lo, hi], number, bool, string, hex64, object, form3 = [b, n, c] non-negative ints, form4 = [b, n, c, d] with d >= 1; {enum}, {list, len?, max?}, {map}, {fields, optional?}, {tagged, cases}. docs/bundle-format.md explains every field.",
 "format": "ditweb-bundle",
 "format_version": 4,
 "exporter_version": "0.4.0",
 "step_bytes": 128,
 "max_branches": 8,
 "max_bytes": 2147483648,
 "binding_types": [
  "uniform",
  "read-only-storage",
  "storage"
 ],
 "programs": [
  "forward",
  "init",
  "step_begin",
  "step_end"
 ],
 "types": {
  "prediction": {
   "enum": [
    "eps",
    "v"
   ]
  },
  "dispatch": {
   "fields": {
    "kernel": "string",
    "label": "string",
    "bindings": {
     "list": "string",
     "max": 16
    },
    "params": {
     "list": "form3",
     "max": 64
    },
    "workgroups": {
     "list": "form4",
     "len": 3
    }
   }
  },
  "binding": {
   "fields": {
    "binding": {
     "int": [
      0,
      16
     ]
    },
    "type": {
     "enum": [
      "uniform",
      "read-only-storage",
      "storage"
     ]
    }
   }
  }
 },
 "manifest": {
  "fields": {
   "format": "string",
   "format_version": {
    "int": [
     0,
     1000000
    ]
   },
   "exporter": "string",
   "dtype": {
    "enum": [
     "f32",
     "f16",
     "int8"
    ]
   },
   "model": {
    "fields": {
     "input_size": {
      "int": [
       1,
       1024
      ]
     },
     "patch_size": {
      "int": [
       1,
       64
      ]
     },
     "in_channels": {
      "int": [
       1,
       64
      ]
     },
     "hidden_size": {
      "int": [
       4,
       16384
      ]
     },
     "depth": {
      "int": [
       1,
       256
      ]
     },
     "num_heads": {
      "int": [
       1,
       1024
      ]
     },
     "mlp_ratio": {
      "number": [
       0.0625,
       16
      ]
     },
     "num_classes": {
      "int": [
       1,
       100000
      ]
     },
     "learn_sigma": "bool",
     "conditioning": {
      "enum": [
       "adaln-zero",
       "adaln",
       "cross-attn",
       "in-context"
      ]
     },
     "prediction": "prediction",
     "label_levels": {
      "list": {
       "int": [
        1,
        100000
       ]
      },
      "max": 8
     },
     "label_nested": {
      "int": [
       1,
       8
      ]
     }
    },
    "optional": [
     "label_levels",
     "label_nested"
    ]
   },
   "class_names": {
    "list": "string",
    "max": 100000
   },
   "null_class": {
    "int": [
     1,
     100000
    ]
   },
   "io": {
    "fields": {
     "x": "string",
     "x_shape": {
      "list": {
       "int": [
        1,
        1024
       ]
      },
      "len": 3
     },
     "t": "string",
     "y": "string",
     "out": "string",
     "out_shape": {
      "list": {
       "int": [
        1,
        1024
       ]
      },
      "len": 3
     },
     "sample": "string"
    }
   },
   "files": {
    "map": {
     "fields": {
      "size": {
       "int": [
        0,
        2147483648
       ]
      },
      "sha256": "hex64"
     }
    }
   },
   "limits": {
    "map": {
     "int": [
      0,
      2147483648
     ]
    }
   },
   "kernels": {
    "map": {
     "fields": {
      "file": "string",
      "op": "string",
      "variant": "object",
      "workgroup_size": {
       "list": {
        "int": [
         1,
         1024
        ]
       },
       "len": 3
      },
      "params": {
       "list": "string",
       "max": 64
      },
      "bindings": {
       "list": "binding",
       "max": 17
      },
      "groups": {
       "list": "string",
       "len": 3
      }
     }
    }
   },
   "buffers": {
    "map": {
     "tagged": "kind",
     "cases": {
      "weight": {
       "fields": {
        "tensor": "string",
        "dtype": {
         "enum": [
          "f32",
          "f16",
          "i8"
         ]
        },
        "shape": {
         "list": {
          "int": [
           0,
           2147483648
          ]
         },
         "max": 8
        },
        "bytes": {
         "int": [
          1,
          2147483647
         ]
        },
        "file": "string"
       },
       "optional": [
        "file"
       ]
      },
      "activation": {
       "fields": {
        "dtype": {
         "enum": [
          "f32",
          "u32"
         ]
        },
        "elements": "form3"
       }
      },
      "step": {
       "fields": {
        "bytes": {
         "int": [
          128,
          128
         ]
        }
       }
      }
     }
    }
   },
   "programs": {
    "fields": {
     "forward": {
      "list": "dispatch"
     },
     "init": {
      "list": "dispatch"
     },
     "step_begin": {
      "list": "dispatch"
     },
     "step_end": {
      "list": "dispatch"
     }
    }
   },
   "sampler": {
    "fields": {
     "prediction": "prediction",
     "schedule": {
      "enum": [
       "linear"
      ]
     },
     "num_timesteps": {
      "int": [
       1000,
       1000
      ]
     },
     "beta_start": {
      "number": [
       1e-08,
       0.5
      ]
     },
     "beta_end": {
      "number": [
       1e-08,
       0.5
      ]
     }
    }
   },
   "candidates": {
    "map": {
     "list": "string",
     "max": 16
    }
   },
   "guidance": {
    "fields": {
     "max_branches": {
      "int": [
       1,
       8
      ]
     }
    }
   }
  },
  "optional": [
   "limits",
   "null_class",
   "guidance",
   "candidates"
  ]
 }
};
export const DECODER_SCHEMA = {
 "_doc": "The schema of decoder/manifest.json, the VAE decoder of a latent bundle (docs/vae.md, 'Bundles with a decoder'), checked by runtime_py/verify.py verify_decoder and web/decode.js (through web/bundle-schema.js) with the same schema walk as the bundle's manifest (the named types dispatch, binding, form3, hex64 are bundle-schema.json's). ops: the kernels a decoder may use (wgsl/ops.py).",
 "format": "ditweb-decoder",
 "format_version": 1,
 "ops": [
  "bmm",
  "conv2d",
  "conv2d_q8",
  "groupnorm",
  "softmax_rows",
  "upsample_nearest"
 ],
 "manifest": {
  "fields": {
   "format": "string",
   "format_version": {
    "int": [
     0,
     1000000
    ]
   },
   "exporter": "string",
   "dtype": {
    "enum": [
     "f32",
     "f16",
     "int8"
    ]
   },
   "vae": {
    "fields": {
     "latent_channels": {
      "int": [
       1,
       64
      ]
     },
     "out_channels": {
      "int": [
       1,
       4
      ]
     },
     "block_out_channels": {
      "list": {
       "int": [
        1,
        4096
       ]
      },
      "max": 8
     },
     "layers_per_block": {
      "int": [
       0,
       16
      ]
     },
     "norm_num_groups": {
      "int": [
       1,
       4096
      ]
     },
     "norm_eps": {
      "number": [
       0,
       1
      ]
     },
     "scaling_factor": {
      "number": [
       1e-06,
       1000000
      ]
     },
     "shift_factor": {
      "number": [
       -1000000,
       1000000
      ]
     },
     "use_post_quant_conv": "bool",
     "mid_block_add_attention": "bool"
    }
   },
   "latent_shape": {
    "list": {
     "int": [
      1,
      1024
     ]
    },
    "len": 3
   },
   "image_shape": {
    "list": {
     "int": [
      1,
      16384
     ]
    },
    "len": 3
   },
   "io": {
    "fields": {
     "latent": "string",
     "image": "string"
    }
   },
   "files": {
    "map": {
     "fields": {
      "size": {
       "int": [
        0,
        2147483648
       ]
      },
      "sha256": "hex64"
     }
    }
   },
   "kernels": {
    "map": {
     "fields": {
      "file": "string",
      "op": "string",
      "variant": "object",
      "workgroup_size": {
       "list": {
        "int": [
         1,
         1024
        ]
       },
       "len": 3
      },
      "params": {
       "list": "string",
       "max": 64
      },
      "bindings": {
       "list": "binding",
       "max": 17
      }
     }
    }
   },
   "buffers": {
    "map": {
     "tagged": "kind",
     "cases": {
      "weight": {
       "fields": {
        "tensor": "string",
        "file": "string",
        "dtype": {
         "enum": [
          "f32",
          "f16",
          "i8"
         ]
        },
        "shape": {
         "list": {
          "int": [
           0,
           2147483648
          ]
         },
         "max": 8
        },
        "bytes": {
         "int": [
          1,
          2147483647
         ]
        }
       }
      },
      "activation": {
       "fields": {
        "dtype": {
         "enum": [
          "f32"
         ]
        },
        "elements": "form3"
       }
      }
     }
    }
   },
   "program": {
    "list": "dispatch",
    "max": 100000
   }
  }
 }
};

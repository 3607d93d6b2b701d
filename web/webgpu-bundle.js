// webgpu-bundle.js: the WebGPU runtime's bundle, the twin of runtime_py in the same order: create pipelines
// (one per kernel, from the bundle's own .wgsl bytes) -> batch buffers and bind groups -> run a step (one
// command buffer: step_begin + forward + step_end). The sampling loop is sampling.js's.
//
// Every GPU validation or shader compile error on the way (a kernel that does not compile or does not match its
// layout, a candidate that fails while a plan is timed, a bind group or dispatch the device refuses) is caught in
// an error scope and becomes one BundleError line naming the kernel, before or instead of a broken run.

import { BundleError, workgroupForms } from "./bundle.js";
import { evaluate } from "./forms.js";
import { decodedPictures } from "./favicon.js";
import { DeviceLostError, SampledBundle } from "./sampling.js";
import { cacheKey, checkPlan, readCachedPlan, slotKey, tunePlan, writeCachedPlan } from "./tune.js";
import { Decoder } from "./decode.js";

function bufferBytes(spec, B, N) {
  if (spec.kind === "weight") return Math.ceil(spec.bytes / 4) * 4;
  if (spec.kind === "step") return spec.bytes;
  return Math.ceil((4 * evaluate(spec.elements, B, N)) / 16) * 16;   // activations: 4-byte elements, 16-byte rounded
}

// The one-line error of a GPU refusal: the kernel's file and name, what was being done, the device's words.
function kernelError(k, name, what, message) {
  return new BundleError(k.file, `kernel ${name}: ${what}: ${String(message).replace(/\s+/g, " ").trim()}`);
}

const LIMITS = ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup", "maxStorageBuffersPerShaderStage", "maxComputeWorkgroupSizeX"];

export class Bundle extends SampledBundle {
  // checkWebGPU: ditweb.js's adapter request ({ok, message, adapter}), run for every device this bundle creates (the
  // first, and a new one after a device loss); loadBundle passes it, and imports this module on the WebGPU path only
  constructor(base, manifest, tensors, kernelSources, stats, opts, checkWebGPU) {
    super(base, manifest, tensors, stats);
    this.kernelSources = kernelSources;
    this.checkWebGPU = checkWebGPU;
    this.onDeviceLost = opts.onDeviceLost || null;
    this.features = opts.features || [];
    this.device = null;
    this.deviceLosses = 0;
    this.lastGPUError = null;          // the last GPU error no scope caught (also on the console)
    this.runtime = "webgpu";
    this.planMode = opts.plan ?? "auto";   // web/tune.js; docs/bundle-format.md "candidates and plans"
    if (typeof this.planMode === "object") checkPlan(this.planMode, manifest);
    else if (!["auto", "default"].includes(this.planMode)) throw new RangeError(`plan must be "auto", "default" or an object, got ${JSON.stringify(this.planMode)}`);
    this.plans = {};                   // "B,N" -> the plan in use
    this.lastTune = null;              // the report of the last timing run
    this.decoder = null;               // a latent bundle's Decoder on the current device
    this.batch = null;
    this.current = null;               // the device and read-back size of the running sample
  }

  // Adapter and device with the limits the bundle needs (taken from the adapter, not the defaults).
  async createDevice() {
    const support = await this.checkWebGPU();
    if (!support.ok) throw new Error(support.message);
    const adapter = support.adapter;
    this.checkLimits(adapter);
    /** @type {Record<string, number>} */
    const requiredLimits = Object.fromEntries(LIMITS.map((limit) => [limit, adapter.limits[limit]]));
    // optional features (e.g. "timestamp-query" for profiling) only where the adapter has them
    const wanted = [...this.features, ...(this.planMode === "auto" ? ["timestamp-query"] : [])];
    const requiredFeatures = [...new Set(wanted)].filter((f) => adapter.features.has(f));
    const device = await adapter.requestDevice({ label: "ditweb", requiredLimits, requiredFeatures });
    const info = /** @type {any} */ (adapter.info || {});
    this.adapterDescription = [info.vendor, info.architecture, info.description].filter(Boolean).join(" / ") || "WebGPU adapter";
    this.device = device;
    this.batch = null;
    device.lost.then((lost) => {
      if (this.device !== device || this.disposed) return;   // an old device, or our own dispose()
      this.device = null;
      this.deviceLosses += 1;
      if (this.onDeviceLost) this.onDeviceLost(lost);
    });
    device.addEventListener("uncapturederror", (e) => { this.lastGPUError = e.error.message; console.error("ditweb:", e.error.message); });
    await this.createPipelines();
    await this.uploadWeights();
    this.decoder = this.decoderFiles ? await Decoder.create(device, this.decoderFiles) : null;
  }

  // What the bundle needs vs what this adapter allows: a clear message instead of a driver error.
  checkLimits(adapter) {
    const need = this.manifest.limits || {};
    const have = adapter.limits;
    const checks = [
      ["max_storage_buffer_binding_size", "maxStorageBufferBindingSize"],
      ["max_compute_workgroup_storage_size", "maxComputeWorkgroupStorageSize"],
      ["max_compute_invocations_per_workgroup", "maxComputeInvocationsPerWorkgroup"],
      ["max_storage_buffers_per_shader_stage", "maxStorageBuffersPerShaderStage"],
    ];
    for (const [key, limit] of checks) {
      // linear forms are evaluated at B = N = 1: the per-batch check is in state()
      const value = Array.isArray(need[key]) ? evaluate(need[key], 1, 1) : need[key];
      if (value !== undefined && value > have[limit]) {
        throw new Error(`the bundle needs ${key} = ${value}, this GPU allows ${limit} = ${have[limit]}`);
      }
    }
    // the largest weight buffer must also fit one buffer (weights come in shards, but each tensor is one buffer)
    const largest = Math.max(0, ...Object.values(this.manifest.buffers).filter((b) => b.kind === "weight").map((b) => bufferBytes(b, 1, 1)));
    if (largest > have.maxBufferSize) throw new Error(`the bundle's largest weight is ${largest} bytes, this GPU allows maxBufferSize = ${have.maxBufferSize}`);
  }

  // ---------------------------------------------------------------- create pipelines
  // The kernels the programs name; candidates are compiled when a plan needs them (pipeline()).
  async createPipelines() {
    this.pipelines = {};
    this.pipelinePromises = {};
    this.plans = {};                   // a new device: plans stay cached, their pipelines are rebuilt
    const used = new Set(Object.values(this.manifest.programs).flatMap((list) => list.map((d) => d.kernel)));
    await Promise.all([...used].map((name) => this.pipeline(name)));
  }

  pipeline(name) {
    if (!this.pipelinePromises[name]) this.pipelinePromises[name] = this.createPipeline(name);
    return this.pipelinePromises[name];
  }

  // Module, layouts and pipeline of one kernel. The scope holds only what is created between its push and pop
  // (no await in between), so the kernels compiled at the same time never see each other's errors.
  async createPipeline(name) {
    const device = this.device;
    const k = this.manifest.kernels[name];
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ label: name, code: this.kernelSources[name] });
    const layout = device.createBindGroupLayout({
      label: name,
      entries: k.bindings.map((b) => ({ binding: b.binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: b.type } })),
    });
    const pipelineLayout = device.createPipelineLayout({ label: name, bindGroupLayouts: [layout] });
    const scoped = device.popErrorScope();
    const [info, error] = await Promise.all([module.getCompilationInfo(), scoped]);
    const errors = info.messages.filter((msg) => msg.type === "error");
    if (errors.length) throw kernelError(k, name, "WGSL does not compile", errors.map((e) => `line ${e.lineNum}: ${e.message}`).join("; "));
    if (error) throw kernelError(k, name, "the device refused its module or layout", error.message);
    try {
      const pipeline = await device.createComputePipelineAsync({ label: name, layout: pipelineLayout, compute: { module, entryPoint: "main" } });
      this.pipelines[name] = { pipeline, layout };
      return this.pipelines[name];
    } catch (e) {
      throw kernelError(k, name, "its pipeline could not be created", e.message);
    }
  }

  // The plan of batch (B, N) under the plan mode: the forced one, the cached one, or timed now (the first
  // batch of each size on this adapter; this.lastTune holds the report).
  async ensurePlan(B, N) {
    const id = `${B},${N}`;
    if (this.plans[id]) return this.plans[id];
    let plan = {};
    if (typeof this.planMode === "object") plan = this.planMode;
    else if (this.planMode === "auto" && Object.keys(this.manifest.candidates || {}).length) {
      const key = cacheKey(this.adapterDescription, this.manifest, B, N);
      plan = readCachedPlan(key, this.manifest);
      if (!plan) {
        const tuned = await tunePlan(this, B, N);
        this.lastTune = tuned.report;
        plan = tuned.plan;
        writeCachedPlan(key, plan);
      }
    }
    await Promise.all(Object.values(plan).map((k) => this.pipeline(k)));
    this.plans[id] = plan;
    return plan;
  }

  // The weight buffers; a refusal (out of memory) becomes one clear error.
  async uploadWeights() {
    const device = this.device;
    this.weightBuffers = {};
    device.pushErrorScope("out-of-memory");
    for (const [name, spec] of Object.entries(this.manifest.buffers)) {
      if (spec.kind !== "weight") continue;
      const t = this.tensors[name];
      const size = bufferBytes(spec, 1, 1);
      const buffer = device.createBuffer({ label: name, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
      if (size === t.nbytes) {
        device.queue.writeBuffer(buffer, 0, t.buf, t.offset, t.nbytes);
      } else {   // odd f16 count: pad to a whole u32 word with a zero half
        const padded = new Uint8Array(size);
        padded.set(new Uint8Array(t.buf, t.offset, t.nbytes));
        device.queue.writeBuffer(buffer, 0, padded);
      }
      this.weightBuffers[name] = buffer;
    }
    const oom = await device.popErrorScope();
    if (oom) {
      const total = Object.values(this.manifest.buffers).filter((b) => b.kind === "weight").reduce((a, b) => a + b.bytes, 0);
      throw new RangeError(`allocating ${(total / 2 ** 20).toFixed(0)} MiB of weights failed on this GPU (out of memory): ${oom.message}`);
    }
  }

  // ---------------------------------------------------------------- batch state
  // Activation buffers, params uniforms and bind groups for batch (B, N) with a plan ({slot: kernel}; by
  // default the one ensurePlan chose); one batch size stays resident. checkState() awaits its validation.
  state(B, N, plan = undefined) {
    plan = plan || this.plans[`${B},${N}`] || {};
    if (this.batch && this.batch.B === B && this.batch.N === N && this.batch.plan === plan) return this.batch;
    this.checkReachAt(B, N);
    if (this.batch) for (const b of this.batch.owned) b.destroy();
    this.batch = null;
    const owned = [];
    const buffers = { ...this.weightBuffers, ...this.activationBuffers(B, N, owned) };
    const programs = {};
    for (const [prog, dispatches] of Object.entries(this.manifest.programs)) {
      programs[prog] = dispatches.map((d) => this.bindDispatch(d, B, N, plan, buffers, owned));
    }
    const stepBuffer = Object.entries(this.manifest.buffers).find(([, s]) => s.kind === "step");
    this.batch = { B, N, plan, buffers, programs, owned, step: stepBuffer ? buffers[stepBuffer[0]] : null, checked: null };
    return this.batch;
  }

  activationBuffers(B, N, owned) {
    const device = this.device;
    const maxBinding = device.limits.maxStorageBufferBindingSize;
    const buffers = {};
    for (const [name, spec] of Object.entries(this.manifest.buffers)) {
      if (spec.kind === "weight") continue;
      const size = bufferBytes(spec, B, N);
      if (size > maxBinding) throw new RangeError(`batch B=${B}, N=${N}: buffer ${name} needs ${size} bytes, above this GPU's maxStorageBufferBindingSize ${maxBinding}; use fewer images or guidance branches`);
      const usage = spec.kind === "step" ? GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
        : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
      buffers[name] = device.createBuffer({ label: name, size: Math.max(size, 16), usage });
      owned.push(buffers[name]);
    }
    return buffers;
  }

  // One dispatch at batch (B, N) under a plan: its params uniform, bind group and workgroup counts. The bind
  // group is created in an error scope of its own (run.created), awaited by checkState().
  bindDispatch(d, B, N, plan, buffers, owned) {
    const device = this.device;
    const maxGroups = device.limits.maxComputeWorkgroupsPerDimension;
    const values = d.params.map((form) => evaluate(form, B, N));
    const name = plan[slotKey(d.kernel, values)] || d.kernel;
    const kernel = this.manifest.kernels[name];
    const words = new Uint32Array(Math.max(4, Math.ceil(d.params.length / 4) * 4));
    words.set(values);
    const params = device.createBuffer({ label: `${d.label} params`, size: words.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(params, 0, words);
    owned.push(params);
    const forms = name === d.kernel ? d.workgroups : workgroupForms(kernel, d.params);
    const workgroups = forms.map((f) => evaluate(f, B, N));
    if (workgroups.some((w) => w > maxGroups)) {
      throw new RangeError(`batch B=${B}, N=${N}: dispatch ${d.label} needs ${workgroups.join("x")} workgroups, above this GPU's ${maxGroups} per dimension`);
    }
    const bound = [params, ...d.bindings.map((n) => buffers[n])];
    const run = this.bindRun(d, name, bound, workgroups);
    return { ...run, kernel, kernelName: d.kernel, values, bound, dispatch: d };
  }

  // {pipeline, bindGroup, workgroups, label, name, created} of dispatch d run by kernel `name` (its pipeline
  // must exist) on the buffers `bound` (params first).
  bindRun(d, name, bound, workgroups) {
    const device = this.device;
    const { pipeline, layout } = this.pipelines[name];
    device.pushErrorScope("validation");
    const bindGroup = device.createBindGroup({ label: `${d.label} [${name}]`, layout,
                                               entries: bound.map((buffer, binding) => ({ binding, resource: { buffer } })) });
    const created = device.popErrorScope();
    return { pipeline, bindGroup, workgroups, label: d.label, name, created };
  }

  // {pipeline, bindGroup, workgroups, ...} of dispatch i of program prog in the resident batch, run by kernel
  // kname (a candidate of its kernel; its pipeline must exist).
  alternative(prog, i, kname) {
    const { dispatch: d, bound } = this.batch.programs[prog][i];
    const forms = kname === d.kernel ? d.workgroups : workgroupForms(this.manifest.kernels[kname], d.params);
    return this.bindRun(d, kname, bound, forms.map((f) => evaluate(f, this.batch.B, this.batch.N)));
  }

  // Every run's bind group and dispatch as the device validates them (encoded alone, never submitted): the first
  // refusal is one BundleError naming its kernel.
  async checkRuns(runs) {
    const device = this.device;
    const verdicts = runs.map((r) => {
      device.pushErrorScope("validation");
      const encoder = device.createCommandEncoder({ label: `check ${r.label}` });
      const pass = encoder.beginComputePass();
      pass.setPipeline(r.pipeline);
      pass.setBindGroup(0, r.bindGroup);
      pass.dispatchWorkgroups(r.workgroups[0], r.workgroups[1], r.workgroups[2]);
      pass.end();
      encoder.finish();
      return device.popErrorScope();
    });
    const created = await Promise.all(runs.map((r) => r.created));
    const dispatched = await Promise.all(verdicts);
    const bad = runs.findIndex((_, j) => created[j] || dispatched[j]);
    if (bad >= 0) {
      const r = runs[bad];
      throw kernelError(this.manifest.kernels[r.name], r.name, `dispatch ${r.label} is refused by the device`, (created[bad] || dispatched[bad]).message);
    }
  }

  // The resident batch, validated once before it first runs.
  async checkState() {
    const batch = this.batch;
    if (!batch.checked) batch.checked = this.checkRuns(Object.values(batch.programs).flat());
    await batch.checked;
  }

  // ---------------------------------------------------------------- run
  // Encode programs into one compute pass of one command buffer (WebGPU orders the dispatches).
  encode(names) {
    const encoder = this.device.createCommandEncoder({ label: names.join("+") });
    const pass = encoder.beginComputePass({ label: names.join("+") });
    for (const name of names) {
      for (const d of this.batch.programs[name]) {
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.bindGroup);
        pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
      }
    }
    pass.end();
    return encoder;
  }

  // Submit programs in a validation scope: a refusal names the dispatch that fails alone, else the programs.
  async submit(names) {
    const device = this.device;
    device.pushErrorScope("validation");
    device.queue.submit([this.encode(names).finish()]);
    const error = await device.popErrorScope();
    if (!error) return;
    const runs = names.flatMap((n) => this.batch.programs[n]);
    await this.checkRuns(runs.map((r) => ({ ...r, created: null })));
    throw new BundleError("manifest.json", `programs ${names.join(" + ")}: the device refused them: ${error.message.replace(/\s+/g, " ").trim()}`);
  }

  async readBuffer(name, bytes) {
    const src = this.batch.buffers[name];
    const staging = this.device.createBuffer({ label: `read ${name}`, size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = this.device.createCommandEncoder({ label: `read ${name}` });
    encoder.copyBufferToBuffer(src, 0, staging, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      throw new DeviceLostError(`reading ${name} failed: ${e.message}`);
    }
    const out = new Float32Array(staging.getMappedRange().slice(0));
    staging.destroy();
    return out;
  }

  async ensureDevice() {
    if (!this.device) await this.createDevice();   // first use after a device loss: new device, pipelines, weights
  }

  // The batch of (B, N) under its plan, validated.
  async ready(B, N) {
    this.checkReachAt(B, N);         // before a plan is timed or a pipeline built for this batch
    await this.ensureDevice();
    await this.ensurePlan(B, N);
    this.state(B, N);
    await this.checkState();
  }

  async forwardRows(x, t, rows) {
    const io = this.manifest.io;
    const B = t.length;
    await this.ready(B, B);
    const q = this.device.queue;
    q.writeBuffer(this.batch.buffers[io.x], 0, x);
    q.writeBuffer(this.batch.buffers[io.t], 0, t);
    q.writeBuffer(this.batch.buffers[io.y], 0, rows);
    await this.submit(["forward"]);
    return this.readBuffer(io.out, 4 * B * io.out_shape.reduce((a, b) => a * b, 1));
  }

  // ---------------------------------------------------------------- the sampling loop's part (sampling.js)
  // A device lost on the way is recreated and the run starts again (the result is a pure function of the
  // options, so nothing is lost but time).
  async sampleOnce(opts) {
    for (let attempt = 0; ; attempt++) {
      const device = this.device;
      try {
        return await super.sampleOnce(opts);
      } catch (e) {
        if (!(e instanceof DeviceLostError) || attempt >= 2) throw e;
        // a failed read-back is a loss only if the device says so (its lost handler then clears this.device)
        const lost = !device || await Promise.race([device.lost.then(() => true), new Promise((r) => setTimeout(() => r(false), 2000))]);
        if (!lost) throw e;
      }
    }
  }

  async startRun(run) {
    const { C, I, B, N, y } = run;
    await this.ready(B, N);
    this.current = { device: this.device, bytes: 4 * N * C * I * I };
    this.device.queue.writeBuffer(this.batch.buffers[this.manifest.io.y], 0, y);
    this.device.queue.writeBuffer(this.batch.step, 0, run.initRecord);
    await this.submit(["init"]);
  }

  async runStep(record, read, check = false) {
    const { device, bytes } = this.current;
    this.lost(device);
    device.queue.writeBuffer(this.batch.step, 0, record);
    await this.submit(["step_begin", "forward", "step_end"]);
    const io = this.manifest.io;
    this.lost(device);                 // a device lost during the submit: DeviceLostError, before any read-back
    const x = read ? await this.readBuffer(io.sample, bytes) : null;
    this.lost(device);
    const out = check ? await this.readBuffer(io.out, 4 * this.batch.B * io.out_shape.reduce((a, b) => a * b, 1)) : null;
    if (!read && !check) await device.queue.onSubmittedWorkDone();
    this.lost(device);
    return { x, out };
  }

  lost(device, what = "sampling") {
    if (this.device !== device) throw new DeviceLostError(`the GPU device was lost during ${what}`);
  }

  // a latent bundle: RGB images from its VAE decoder, run once
  async output(x, run) {
    if (!this.decoder) return this.images(x, run.C, run.I);
    const image = await this.decoder.decode(x, run.N);
    this.lost(this.current.device, "decoding");
    return decodedPictures(image, this.decoder.manifest.image_shape, run.N);
  }

  dispose() {
    this.disposed = true;
    if (this.device) this.device.destroy();
    this.device = null;
  }
}

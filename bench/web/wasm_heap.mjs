// A bump allocator over a kernels module's linear memory, for the benchmarks that call its exports directly
// (bench.js matmulPeak in the page, simd_matmul.mjs in node): 16-byte aligned blocks from __heap_base up,
// growing the memory as needed. Nothing is freed: one allocator per instance and measurement.

/**
 * @param {any} x the instance's exports (memory, __heap_base)
 * @returns {(n: number) => number} alloc(n bytes) -> byte offset
 */
export function heapAllocator(x) {
  let top = (x.__heap_base.value + 15) & ~15;
  return (n) => {
    const ptr = top;
    top = (top + n + 15) & ~15;
    if (top > x.memory.buffer.byteLength) x.memory.grow(Math.ceil((top - x.memory.buffer.byteLength) / 65536));
    return ptr;
  };
}

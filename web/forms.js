// Linear forms, the twin of ditformat/forms.py evaluate(): a batch-dependent integer in a manifest is [b, n, c]
// = b*B + n*N + c (B rows of the model batch, N images being sampled); a workgroup count is [b, n, c, d] =
// ceil(form / d). The one evaluator of the page, the worker and the decoder.

/** @param {number[]} form @param {number} B @param {number} N @returns {number} */
export function evaluate(form, B, N) {
  const v = form[0] * B + form[1] * N + form[2];
  return form.length === 4 ? Math.ceil(v / form[3]) : v;
}

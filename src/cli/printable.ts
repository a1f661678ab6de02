/**
 * Shows control characters (C0, DEL, C1) and bidirectional overrides as
 * \u escapes: a reason is free text from whoever revoked, and printed raw
 * to a terminal an escape sequence could rewrite or hide what is shown.
 */
export const printable = (text: string) =>
  // eslint-disable-next-line no-control-regex -- control characters are what it escapes
  text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)

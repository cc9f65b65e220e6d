// The HTTP API the page uses: the same routes as every other client (see /apiv1/openapi.json).

/** A refused or failed request; `message` is the API's own `{"error": ...}` text when it sent one. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The API's error text from a response body, or a description of what came back instead. */
function errorText(status, body) {
  try {
    const parsed = JSON.parse(body);
    if (parsed && typeof parsed.error === 'string') return parsed.error;
  } catch {
    // Not JSON: a proxy in front of the server answered.
  }
  return status === 0 ? 'the server could not be reached' : `the server answered HTTP ${status}`;
}

async function getJson(path) {
  let resp;
  try {
    resp = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  } catch {
    throw new ApiError(0, errorText(0, ''));
  }
  const body = await resp.text();
  if (!resp.ok) throw new ApiError(resp.status, errorText(resp.status, body));
  return JSON.parse(body);
}

/**
 * POST /apiv1/separate with an already serialised JSON body. XMLHttpRequest rather than fetch:
 * it reports upload progress, which matters for a 12 MiB song on a slow line.
 * @param {string} body
 * @param {(percent: number) => void} onUpload
 * @returns {Promise<{hash: string, reason: string}>}
 */
export function separate(body, onUpload) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/apiv1/separate');
    xhr.setRequestHeader('Content-Type', 'application/json');
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onUpload(Math.floor((100 * e.loaded) / e.total));
    });
    xhr.addEventListener('load', () => {
      if (xhr.status === 200) {
        try {
          resolve(JSON.parse(xhr.responseText));
          return;
        } catch {
          // fall through: a 200 that is not ours
        }
      }
      reject(new ApiError(xhr.status, errorText(xhr.status, xhr.responseText)));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, errorText(0, ''))));
    xhr.send(body);
  });
}

/** GET /apiv1/status/<hash>: state, progress 0-100, tracks, error, model. */
export function status(hash) {
  return getJson(`/apiv1/status/${encodeURIComponent(hash)}`);
}

/** GET /apiv1/queue: the hashes waiting for a worker, newest first. */
export async function queue() {
  const body = await getJson('/apiv1/queue');
  return Array.isArray(body.queue) ? body.queue : [];
}

/** GET /apiv1/models, where the server has it; null when it does not answer 200. */
export async function models() {
  try {
    return await getJson('/apiv1/models');
  } catch {
    return null;
  }
}

/** Where a track of a song (a stem or a `no_<stem>` mix) is downloaded, as `ext` (mp3, flac, wav). */
export function trackUrl(hash, track, ext = 'mp3') {
  return `/apiv1/track/${encodeURIComponent(hash)}/${encodeURIComponent(track)}.${ext}`;
}

/** Where every track of a song is downloaded in one zip of `format` files. */
export function zipUrl(hash, format) {
  return `/apiv1/zip/${encodeURIComponent(hash)}?format=${encodeURIComponent(format)}`;
}

/** The bytes of a stem. */
export async function trackBytes(hash, track) {
  let resp;
  try {
    resp = await fetch(trackUrl(hash, track));
  } catch {
    throw new ApiError(0, errorText(0, ''));
  }
  if (!resp.ok) throw new ApiError(resp.status, errorText(resp.status, await resp.text()));
  return resp.arrayBuffer();
}

// The page: choose or drop a song, send it through POST /apiv1/separate, follow it in the list
// of songs, and open it in the mixer when its stems are ready.

import * as api from './api.js';
import { JobList } from './jobs.js';
import { Mixer } from './mixer.js';
import { loadOptions, renderOptions } from './options.js';

const $ = (id) => document.getElementById(id);

/** What the server rendered into the page: {models, default_model, max_body_bytes, too_large}. */
const facts = JSON.parse($('server-facts').textContent);

const uploadMessage = $('upload-message');

function say(text, isError = false) {
  uploadMessage.textContent = text;
  uploadMessage.classList.toggle('error', isError);
}

const mixer = new Mixer({
  section: $('mixer'),
  song: $('mixer-song'),
  play: $('play'),
  stop: $('stop'),
  seek: $('seek'),
  clock: $('clock'),
  stems: $('stems'),
  downloads: $('downloads'),
  message: $('mixer-message'),
});

const jobs = new JobList($('jobs'), $('jobs-empty'), {
  onOpen: (job) => mixer.open(job),
  onDone: (job) => {
    // Only a song sent from this page opens by itself; the list after a reload waits for a click.
    if (job.openWhenDone) {
      job.openWhenDone = false;
      mixer.open(job);
    }
  },
});

function size(bytes) {
  const mib = bytes / (1024 * 1024);
  return mib >= 1 ? `${Number(mib.toFixed(1))} MiB` : `${Math.floor(bytes / 1024)} KiB`;
}

// Base64 makes a file a third larger inside the JSON body.
$('limit').textContent = size((facts.max_body_bytes * 3) / 4);

const optionsReady = loadOptions(facts).then((options) => renderOptions($('options'), options));

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener('load', () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(',') + 1));
    });
    reader.addEventListener('error', () => reject(reader.error));
    reader.readAsDataURL(file);
  });
}

/** Sends one file; the server decides whether it is audio, and its words are shown if not. */
async function submit(file) {
  const fields = (await optionsReady)();
  say(`Reading ${file.name}…`);
  let base64;
  try {
    base64 = await readBase64(file);
  } catch (e) {
    say(`${file.name} could not be read: ${e.message}`, true);
    return;
  }
  const body = JSON.stringify({ mp3: base64, ...fields });
  // The server would answer 413 with these words; saying them here spares the upload.
  if (body.length > facts.max_body_bytes) {
    say(`${file.name} was refused: ${facts.too_large}`, true);
    return;
  }
  try {
    const reply = await api.separate(body, (percent) =>
      say(percent < 100 ? `Uploading ${file.name}: ${percent}%` : `Checking ${file.name}…`),
    );
    say(`${file.name}: ${reply.reason}`);
    jobs.add(reply.hash, file.name, fields.model || facts.default_model, true);
  } catch (e) {
    say(`${file.name} was refused: ${e.message}`, true);
  }
}

async function submitAll(files) {
  for (const file of files) await submit(file);
}

const drop = $('drop');
const input = $('file');
input.addEventListener('change', () => {
  const files = [...input.files];
  // Cleared, so choosing the same file again is a change too.
  input.value = '';
  submitAll(files);
});
for (const type of ['dragenter', 'dragover']) {
  drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
}
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  submitAll([...e.dataTransfer.files]);
});
// A file dropped beside the zone must not replace the page with the file.
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

// The choices a submission can carry. Each option is one field of the POST /apiv1/separate body;
// today the API takes `model` only. A new option (an output format, a mix) is one more entry in
// the list `loadOptions` returns, rendered and collected by the same code.

import * as api from './api.js';
import { h } from './dom.js';

const REMEMBERED = 'stemsep.options.v1';

/**
 * The served models as [{name, stems?, weights?, segment_seconds?}], from GET /apiv1/models, else
 * (Redis unreachable) from the model names the server put in the page.
 */
async function servedModels(facts) {
  const body = await api.models();
  const list = body && (Array.isArray(body) ? body : body.models);
  if (Array.isArray(list)) {
    const models = list
      .map((m) => (typeof m === 'string' ? { name: m } : { ...m, name: m && (m.name ?? m.id) }))
      .filter((m) => typeof m.name === 'string' && m.name !== '');
    if (models.length) return models;
  }
  return facts.models.map((name) => ({ name }));
}

/** How a model is offered: its name, its stems when known, and whether its weights are not real. */
function modelLabel(m) {
  let label = m.name;
  if (Array.isArray(m.stems) && m.stems.length) label += ` (${m.stems.length} stems: ${m.stems.join(', ')})`;
  if (m.weights === 'demo') label += ', demo weights';
  if (m.weights === 'random') label += ', random test weights';
  return label;
}

/**
 * The options a submission offers: [{field, label, choices: [{value, label}], value}].
 * @param {{models: string[], default_model: string}} facts the server's facts (index.html)
 */
export async function loadOptions(facts) {
  const models = await servedModels(facts);
  const names = models.map((m) => m.name);
  return [
    {
      field: 'model',
      label: 'Model',
      choices: models.map((m) => ({ value: m.name, label: modelLabel(m) })),
      value: names.includes(facts.default_model) ? facts.default_model : names[0],
    },
  ];
}

function remembered() {
  try {
    return JSON.parse(localStorage.getItem(REMEMBERED)) || {};
  } catch {
    return {};
  }
}

/**
 * Renders `options` as labelled selects into `root`; returns a function that collects the
 * chosen values as fields of the request body (and remembers them for the next visit).
 */
export function renderOptions(root, options) {
  const previous = remembered();
  const selects = options.map((opt) => {
    const select = h(
      'select',
      { name: opt.field },
      ...opt.choices.map((c) => h('option', { value: c.value, textContent: c.label })),
    );
    const wanted = previous[opt.field];
    select.value = opt.choices.some((c) => c.value === wanted) ? wanted : opt.value;
    root.append(h('label', { className: 'option' }, h('span', { textContent: opt.label }), select));
    return select;
  });
  return () => {
    const values = Object.fromEntries(selects.map((s) => [s.name, s.value]));
    try {
      localStorage.setItem(REMEMBERED, JSON.stringify(values));
    } catch {
      // Storage full or disabled: the choice is simply not remembered.
    }
    return values;
  };
}

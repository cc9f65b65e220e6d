// Building the page's elements. Text always goes in as text (textContent), never as HTML, so a
// song's file name cannot inject markup.

/**
 * A new element. `props` are set as properties (className, textContent, type, value, …), in
 * order, except `attrs`, which are set as attributes (role, aria-*, data-*).
 * @param {string} tag
 * @param {object} props
 * @param {...(Node|string)} children
 */
export function h(tag, props = {}, ...children) {
  const { attrs = {}, ...properties } = props;
  const node = Object.assign(document.createElement(tag), properties);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

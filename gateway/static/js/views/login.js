// The login screen: paste a token once; it is checked against the API before anything else is shown.

import {h} from '../dom.js';

export function renderLogin(root, {message, onSubmit}) {
  const input = h('input', {id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'off',
    spellcheck: 'false', 'aria-describedby': 'token-help'});
  const error = h('div', {role: 'alert', class: 'form-error'}, message ?? '');
  const button = h('button', {type: 'submit'}, 'Sign in');
  const form = h('form', {class: 'card login', onsubmit: async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) { error.textContent = 'Paste a token first.'; input.focus(); return; }
    button.disabled = true;
    error.textContent = '';
    try {
      await onSubmit(token);
    } catch (problem) {
      error.textContent = problem.status === 401 ? 'That token was not accepted: it is unknown, expired or revoked.'
        : problem.message;
      input.select();
    } finally {
      button.disabled = false;
    }
  }},
  h('h1', {tabindex: '-1'}, 'Sign in to stoker'),
  h('div', {class: 'field'}, h('label', {for: 'token'}, 'Access token'), input,
    h('small', {id: 'token-help', class: 'muted'},
      'Follow the login link that `stoker up` prints, or paste the admin token from admin.token in the data directory, ',
      'or a token from `stoker token create`. It stays in this browser until you sign out.')),
  error, button);
  root.replaceChildren(form);
  input.focus();
}

// Results of an evaluation run: statistics of each figure, a score histogram and the per-episode table.

import {api} from '../api.js';
import {histogram} from '../chart.js';
import {debounce, failure, fmtInt, fmtNum, fmtTime, h} from '../dom.js';

const MAX_ROWS = 200;

export class Results {
  constructor(jobId) {
    this.jobId = jobId;
    this.body = h('div', null, h('p', {class: 'muted'}, 'Loading results…'));
    this.element = h('section', {class: 'card', 'aria-labelledby': 'results-h', hidden: true},
      h('h2', {id: 'results-h'}, 'Evaluation results'), this.body);
    // Episodes arrive one by one; fetching the whole result once they settle keeps the statistics exact.
    this.reload = debounce(() => this.load(), 800);
  }

  async load() {
    this.element.hidden = false;
    try {
      this.render(await api(`/testing/${this.jobId}/results`));
    } catch (error) {
      if (error.status !== 401) this.body.replaceChildren(failure(error, () => this.load()));
    }
  }

  episode() {
    if (!this.element.hidden) this.reload();
  }

  destroy() {
    this.reload = () => {};
  }

  render(data) {
    const episodes = data.episodes ?? [];
    const figures = [...new Set(episodes.flatMap((e) => Object.keys(e.figures ?? {})))].filter((n) => n !== 'score').sort();
    const stats = Object.entries(data.aggregate_metrics ?? {});
    const parts = [];
    if (!episodes.length && !stats.length) {
      this.body.replaceChildren(h('p', {class: 'muted'}, 'No episode has finished yet.'));
      return;
    }
    if (stats.length) {
      parts.push(h('div', {class: 'table-wrap'}, h('table', {class: 'data'},
        h('caption', null, `Statistics over ${fmtInt(episodes.length)} episodes`),
        h('thead', null, h('tr', null, ['Figure', 'Mean', 'Median', 'Min', 'Max', 'Std'].map((t) => h('th', {scope: 'col'}, t)))),
        h('tbody', null, stats.map(([name, s]) => h('tr', null, h('th', {scope: 'row'}, name),
          ...[s.mean, s.median, s.min, s.max, s.std].map((v) => h('td', null, fmtNum(v)))))))));
    }
    if (episodes.length) {
      parts.push(histogram(episodes.map((e) => e.score), {title: 'Score histogram', label: 'score'}));
      const shown = episodes.slice(-MAX_ROWS).reverse();
      parts.push(h('div', {class: 'table-wrap'}, h('table', {class: 'data episodes'},
        h('caption', null, episodes.length > MAX_ROWS ? `The newest ${MAX_ROWS} of ${fmtInt(episodes.length)} episodes`
          : 'Episodes, newest first'),
        h('thead', null, h('tr', null, ['Episode', 'Score', ...figures, 'Finished'].map((t) => h('th', {scope: 'col'}, t)))),
        h('tbody', null, shown.map((e) => h('tr', null, h('th', {scope: 'row'}, fmtInt(e.episode)),
          h('td', null, fmtNum(e.score)), ...figures.map((f) => h('td', null, fmtNum(e.figures?.[f]))),
          h('td', null, fmtTime(e.timestamp))))))));
    }
    this.body.replaceChildren(...parts);
  }
}

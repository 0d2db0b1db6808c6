import { mount } from 'svelte';
import './app.css';
import './chart-card.css';
import App from './App.svelte';
import { initToken } from './lib/token';
import { theme } from './lib/theme.svelte';
import { service } from './lib/live.svelte';
import './lib/tracked'; // window.__collisionos

performance.mark('collisionos:boot');
initToken();
theme.apply();

// Connect (stream + backfill) while the first render runs; App owns the service from here
// (its onMount start() is then a no-op, its destroy stops it).
service.start();

const target = document.getElementById('app');
if (!target) throw new Error('#app missing');
mount(App, { target });

import { mount } from 'svelte';
import './app.css';
import './chart-card.css';
import App from './App.svelte';
import { initToken } from './lib/token';
import { theme } from './lib/theme.svelte';
import './lib/tracked'; // window.__collisionos

performance.mark('collisionos:boot');
initToken();
theme.apply();

const target = document.getElementById('app');
if (!target) throw new Error('#app missing');
mount(App, { target });

"""V-IRL navigation (`sftrl/VIRL-v0`): synthetic cities, street-view pictures, real-data loader.

Modules: geometry (headings, labels), places + city (seeded street graphs), styles, route (rail
and expert actions), instructions, observation, prompt, render (Pillow pictures), verifier, oracle,
real_data (V-IRL route files and panoramas), env (the Gymnasium class). This file imports nothing,
so `import envs` stays light.
"""

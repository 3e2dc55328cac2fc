"""The seed state of the layers that sample or run trajectories, kept in `.keras` files.

Such a layer draws its randomness from a `keras.random.SeedGenerator` held
in `self._seed_generator` (an int64 `[2]` state variable, advanced once per
call). Keras saves a layer's own variables in a `.keras` file but not its
seed generators' states, so a reloaded layer would restart its sequence at
`seed` and repeat draws it already used. `SeedStateMixin` saves the state
next to the weights, under `SEED_STATE_KEY`. (SavedModels track the
variable themselves.)
"""

SEED_STATE_KEY = "seed_state"  # the key of the state in the layer's store of a `.keras` file's weights


class SeedStateMixin:
    """Saves and restores `self._seed_generator`'s state with the layer's variables.

    Put it before `keras.layers.Layer` among the bases. A layer without a
    seed generator saves nothing more; a file without the key (saved
    before layers kept it) still loads, its sequence restarting at `seed`.
    """

    def save_own_variables(self, store):
        super().save_own_variables(store)
        generator = getattr(self, "_seed_generator", None)
        if generator is not None:
            store[SEED_STATE_KEY] = generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        generator = getattr(self, "_seed_generator", None)
        if SEED_STATE_KEY in keys and generator is not None:
            generator.state.assign(store[SEED_STATE_KEY])
        # Keras expects exactly the layer's own variables in the store.
        super().load_own_variables({k: store[k] for k in keys if k != SEED_STATE_KEY})

"""How good and how sure: metrics, prediction tables, stage calibration, conformal intervals, uncertainty, site profiles, embeddings."""

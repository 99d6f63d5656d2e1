"""Where photos come from: each source (garden, folder, Flowers-102, Open Images) turns its
params into files plus one listing row per file (listing.py); registry.py names them and
runs the ones data.sources asks for; ingest.py decodes what they found."""

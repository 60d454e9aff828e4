"""Small helpers every layer uses: settings, paths, errors, atomic files, device, processes. No project imports."""

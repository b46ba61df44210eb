"""List every registered component with the package it came from, then the loaded plugins and
the plugins that failed to import (with their error):
``python tools/list_components.py [--registry model]``."""
import argparse
import difflib


def main(argv=None):
    parser = argparse.ArgumentParser(description='List registered components and their packages.')
    parser.add_argument('--registry', help='only this registry (e.g. model, dataset, metric)')
    args = parser.parse_args(argv)
    import toolbox  # noqa: F401  (registers the core)
    from toolbox.plugins import failed_plugins, list_components, loaded_plugins
    rows = list_components()
    if args.registry is not None:
        known = sorted({r['registry'] for r in rows})
        if args.registry not in known:
            close = difflib.get_close_matches(args.registry, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ''
            parser.error(f"--registry '{args.registry}' is not a registry{hint}; the registries "
                         f"are: {', '.join(known)}")
        rows = [r for r in rows if r['registry'] == args.registry]
    width = max([len(r['name']) for r in rows] + [4])
    print(f"{'registry':<22} {'name':<{width}} {'package':<22} module")
    for r in rows:
        print(f"{r['registry']:<22} {r['name']:<{width}} {r['package']:<22} {r['module']}")
    print(f'\nplugins loaded: {", ".join(ep.name + "=" + ep.value for ep in loaded_plugins())}')
    failed = failed_plugins()
    if failed:
        print(f'\nplugins FAILED ({len(failed)}), their components are not registered:')
    for plugin in failed:
        print(f'  {plugin.name}={plugin.module} (distribution {plugin.distribution}): '
              f'{plugin.error}')
    return rows


if __name__ == '__main__':
    main()
